-- Nexmark q18: the last bid of each bidder on each auction (deduplication with
-- ROW_NUMBER ... <= 1). The reference orders by date_time DESC only; the generator
-- makes several bids of one bidder on one auction in the same millisecond, so price and
-- extra break the ties (otherwise the kept row depends on arrival order). With more
-- than the time attribute in its ORDER BY, Flink plans this as a TopN (rank 1) rather
-- than its deduplicate operator.
CREATE TABLE nexmark_q18 (
    auction   BIGINT,
    bidder    BIGINT,
    price     BIGINT,
    channel   STRING,
    url       STRING,
    date_time TIMESTAMP(3),
    extra     STRING
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q18
SELECT auction, bidder, price, channel, url, date_time, extra
FROM (
    SELECT auction, bidder, price, channel, url, date_time, extra,
           ROW_NUMBER() OVER (PARTITION BY bidder, auction
                              ORDER BY date_time DESC, price DESC, extra DESC) AS rank_number
    FROM bid
) AS B
WHERE rank_number <= 1;
