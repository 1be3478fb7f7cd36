-- Runs once, when the compose Postgres volume is first initialised: the database the trips are loaded into
-- (TAXI_POSTGRES_URL), next to Dagster's own database `dagster` (POSTGRES_DB).
CREATE DATABASE taxi OWNER dagster;
