\set id random(1, :rows - 99)
SELECT v FROM pt WHERE id BETWEEN :id AND :id + 99;
