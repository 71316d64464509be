-- q9 final result: per auction, its highest bid within [date_time, expires] (ties
-- broken as in queries/flink/q9.sql), with the auction's columns.
SELECT id, item_name, description, initial_bid, reserve, date_time, expires, seller,
       category, extra, auction, bidder, price, bid_date_time, bid_extra
FROM (
    SELECT A.*, B.auction, B.bidder, B.price, B.date_time AS bid_date_time,
           B.extra AS bid_extra,
           row_number() OVER (PARTITION BY A.id
                              ORDER BY B.price DESC, B.date_time ASC, B.bidder ASC, B.extra ASC)
               AS rownum
    FROM auction A
    JOIN bid B ON A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
) W
WHERE rownum <= 1
