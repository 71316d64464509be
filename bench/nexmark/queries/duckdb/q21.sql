-- q21 final result. DuckDB's regexp_extract gives '' when the pattern does not match;
-- Flink's REGEXP_EXTRACT gives NULL, hence the regexp_matches guard.
WITH b AS (
    SELECT *,
           CASE WHEN regexp_matches(url, '(&|^)channel_id=([^&]*)')
                THEN regexp_extract(url, '(&|^)channel_id=([^&]*)', 2) END AS url_channel_id
    FROM bid
)
SELECT auction, bidder, price, channel,
       CASE
           WHEN lower(channel) = 'apple' THEN '0'
           WHEN lower(channel) = 'google' THEN '1'
           WHEN lower(channel) = 'facebook' THEN '2'
           WHEN lower(channel) = 'baidu' THEN '3'
           ELSE url_channel_id
       END AS channel_id
FROM b
WHERE url_channel_id IS NOT NULL
   OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')
