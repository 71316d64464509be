-- q22 final result. Flink's SPLIT_INDEX(url, '/', i) is zero-based and NULL past the
-- end: DuckDB's string_split(url, '/')[i + 1] (one-based, NULL past the end).
SELECT auction, bidder, price, channel,
       string_split(url, '/')[4] AS dir1,
       string_split(url, '/')[5] AS dir2,
       string_split(url, '/')[6] AS dir3
FROM bid
