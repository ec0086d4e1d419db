-- The shop's tables.
CREATE TABLE IF NOT EXISTS users (
    id    bigint PRIMARY KEY,
    email text NOT NULL UNIQUE,
    name  text,
    plan  text NOT NULL DEFAULT 'free'
);
CREATE TABLE IF NOT EXISTS orders (
    id      bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    amount  integer NOT NULL,
    status  text NOT NULL
);
