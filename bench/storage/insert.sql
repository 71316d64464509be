\set n :n + 1
\set id :base + :client_id * 1000000000 + :n
\set k :id % 1000
INSERT INTO ins (id, k, v) VALUES (:id, :k, 'abcdefghijklmnopqrstuvwxyz012345');
