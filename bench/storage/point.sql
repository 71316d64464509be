\set id random(1, :rows)
SELECT v FROM pt WHERE id = :id;
