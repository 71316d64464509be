-- Nexmark q20: expand each bid with its auction's columns, for auctions of category 10
-- (a regular inner join on the auction id: Flink keeps every bid and auction in state).
CREATE TABLE nexmark_q20 (
    auction           BIGINT,
    bidder            BIGINT,
    price             BIGINT,
    channel           STRING,
    url               STRING,
    bid_date_time     TIMESTAMP(3),
    bid_extra         STRING,
    item_name         STRING,
    description       STRING,
    initial_bid       BIGINT,
    reserve           BIGINT,
    auction_date_time TIMESTAMP(3),
    expires           TIMESTAMP(3),
    seller            BIGINT,
    category          BIGINT,
    auction_extra     STRING
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q20
SELECT B.auction, B.bidder, B.price, B.channel, B.url, B.date_time AS bid_date_time,
       B.extra AS bid_extra, A.item_name, A.description, A.initial_bid, A.reserve,
       A.date_time AS auction_date_time, A.expires, A.seller, A.category,
       A.extra AS auction_extra
FROM bid AS B
INNER JOIN auction AS A ON B.auction = A.id
WHERE A.category = 10;
