-- A short tour of weir through psql. Run by sql-tests/tests/clients.rs as
--   psql -X -w -A -v ON_ERROR_STOP=1 -h 127.0.0.1 -p PORT -U weir -d weir -f tour.sql
-- (-A: unaligned output, which the test matches line by line).

CREATE TABLE orders (id int PRIMARY KEY, customer text, amount numeric(10,2), placed date);

-- Server-side COPY: the rows follow inline, terminated by \.
COPY orders FROM STDIN;
1	alice	10.50	2024-01-01
2	bob	20.00	2024-01-02
3	alice	5.25	2024-01-03
\.

-- Client-side \copy: with psql -f, "from stdin" also reads inline rows.
\copy orders (id, customer, amount, placed) from stdin with (format csv)
4,carol,7.75,2024-01-04
5,bob,,2024-01-05
\.

INSERT INTO orders VALUES (6, 'dave', 1.00, '2024-01-06');

CREATE MATERIALIZED VIEW customer_totals AS
SELECT customer, count(*) AS orders, sum(amount) AS total
FROM orders GROUP BY customer;

FLUSH;

\echo 'totals before changes'
SELECT customer, orders, total FROM customer_totals ORDER BY customer;

UPDATE orders SET amount = 1.00 WHERE id = 2;
DELETE FROM orders WHERE id = 3;
DELETE FROM orders WHERE customer = 'dave';

FLUSH;

\echo 'totals after changes'
SELECT customer, orders, total FROM customer_totals ORDER BY customer;

\echo 'orders'
SELECT id, customer, amount, placed FROM orders ORDER BY id;
