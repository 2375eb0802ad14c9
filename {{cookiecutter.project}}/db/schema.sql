-- The application's schema. Loaded once per test run into the template
-- database; every pytest-xdist worker gets a clone (CREATE DATABASE ... TEMPLATE).
CREATE TABLE items (
    id      integer PRIMARY KEY,
    name    text NOT NULL,
    price   numeric(10, 2) NOT NULL CHECK (price >= 0)
);
CREATE TABLE orders (
    id       serial PRIMARY KEY,
    item_id  integer NOT NULL REFERENCES items(id),
    quantity integer NOT NULL CHECK (quantity > 0)
);
CREATE INDEX orders_item_id ON orders (item_id);
