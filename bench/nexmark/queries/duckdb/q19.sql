-- q19 final result: the 10 highest bids per auction with their rank, ties broken as in
-- queries/flink/q19.sql.
SELECT auction, bidder, price, channel, url, date_time, extra, rank_number
FROM (
    SELECT *, row_number() OVER (PARTITION BY auction
                                 ORDER BY price DESC, date_time ASC, bidder ASC, extra ASC)
               AS rank_number
    FROM bid
) B
WHERE rank_number <= 10
