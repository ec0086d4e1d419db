CREATE TABLE accounts (
  id int PRIMARY KEY,
  balance int NOT NULL CHECK (balance >= 0)
);
CREATE TABLE transfers (
  id serial PRIMARY KEY,
  from_id int NOT NULL REFERENCES accounts,
  to_id int NOT NULL REFERENCES accounts,
  amount int NOT NULL
);
INSERT INTO accounts VALUES (1, 5000), (2, 0);
