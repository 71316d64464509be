-- Nexmark q14: calculation. Converts each bid's price to euros, classifies its hour of
-- day and counts the 'c' characters of its extra field with the user-defined function
-- count_char (the reference's Java UDF; here weir.nexmark.CountChar, compiled from
-- bench/nexmark/udf/CountChar.java by bench/nexmark.sh and loaded with
-- `--conf pipeline.jars=file://...`). Weir has count_char built in.
CREATE TEMPORARY SYSTEM FUNCTION count_char AS 'weir.nexmark.CountChar' LANGUAGE JAVA;

CREATE TABLE nexmark_q14 (
    auction       BIGINT,
    bidder        BIGINT,
    price         DECIMAL(23, 3),
    bid_time_type STRING,
    date_time     TIMESTAMP(3),
    extra         STRING,
    c_counts      BIGINT
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q14
SELECT auction, bidder, 0.908 * price AS price,
       CASE
           WHEN HOUR(date_time) >= 8 AND HOUR(date_time) <= 18 THEN 'dayTime'
           WHEN HOUR(date_time) <= 6 OR HOUR(date_time) >= 20 THEN 'nightTime'
           ELSE 'otherTime'
       END AS bid_time_type,
       date_time, extra, count_char(extra, 'c') AS c_counts
FROM bid
WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000;
