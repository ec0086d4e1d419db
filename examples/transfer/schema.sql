CREATE TABLE accounts (
  id int PRIMARY KEY,
  balance int NOT NULL CHECK (balance >= 0),
  updated_at timestamptz NOT NULL DEFAULT now()
);
-- Columns that differ on every run by construction: a replay compares everything else.
CREATE TABLE transfers (
  id serial PRIMARY KEY,
  ref uuid NOT NULL DEFAULT gen_random_uuid(),
  from_id int NOT NULL REFERENCES accounts,
  to_id int NOT NULL REFERENCES accounts,
  amount int NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO accounts (id, balance) VALUES (1, 5000), (2, 0);
