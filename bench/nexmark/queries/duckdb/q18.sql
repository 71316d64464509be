-- q18 final result: the last bid per (bidder, auction), ties broken as in
-- queries/flink/q18.sql.
SELECT auction, bidder, price, channel, url, date_time, extra
FROM (
    SELECT *, row_number() OVER (PARTITION BY bidder, auction
                                 ORDER BY date_time DESC, price DESC, extra DESC) AS rank_number
    FROM bid
) B
WHERE rank_number <= 1
