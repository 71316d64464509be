-- Nexmark q19: the 10 highest bids of each auction, with their rank (TopN). The
-- reference orders by price DESC only; equal prices on one auction are common, so
-- date_time, bidder and extra break the ties (otherwise which bids make the top 10, and
-- their rank numbers, depend on arrival order).
CREATE TABLE nexmark_q19 (
    auction     BIGINT,
    bidder      BIGINT,
    price       BIGINT,
    channel     STRING,
    url         STRING,
    date_time   TIMESTAMP(3),
    extra       STRING,
    rank_number BIGINT
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q19
SELECT auction, bidder, price, channel, url, date_time, extra, rank_number
FROM (
    SELECT auction, bidder, price, channel, url, date_time, extra,
           ROW_NUMBER() OVER (PARTITION BY auction
                              ORDER BY price DESC, date_time ASC, bidder ASC, extra ASC)
               AS rank_number
    FROM bid
) AS B
WHERE rank_number <= 10;
