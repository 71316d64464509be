-- Nexmark q9: winning bids. Per auction, the highest bid made during its lifetime
-- ([date_time, expires], both ends inclusive), with the auction's columns. A regular
-- join and a TopN (ROW_NUMBER ... <= 1): Flink keeps every auction and bid in state.
-- The reference orders by price DESC, date_time ASC only; the generator makes equal
-- (price, date_time) bids on one auction, so bidder and extra break the remaining ties
-- (otherwise the winner depends on arrival order).
CREATE TABLE nexmark_q9 (
    id            BIGINT,
    item_name     STRING,
    description   STRING,
    initial_bid   BIGINT,
    reserve       BIGINT,
    date_time     TIMESTAMP(3),
    expires       TIMESTAMP(3),
    seller        BIGINT,
    category      BIGINT,
    extra         STRING,
    auction       BIGINT,
    bidder        BIGINT,
    price         BIGINT,
    bid_date_time TIMESTAMP(3),
    bid_extra     STRING
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q9
SELECT id, item_name, description, initial_bid, reserve, date_time, expires, seller, category,
       extra, auction, bidder, price, bid_date_time, bid_extra
FROM (
    SELECT A.id, A.item_name, A.description, A.initial_bid, A.reserve, A.date_time, A.expires,
           A.seller, A.category, A.extra,
           B.auction, B.bidder, B.price, B.date_time AS bid_date_time, B.extra AS bid_extra,
           ROW_NUMBER() OVER (PARTITION BY A.id
                              ORDER BY B.price DESC, B.date_time ASC, B.bidder ASC, B.extra ASC)
               AS rownum
    FROM auction A, bid B
    WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
) AS W
WHERE rownum <= 1;
