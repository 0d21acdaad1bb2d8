-- The process group of a running step, so that `recover` can stop what a dead worker left.
ALTER TABLE steps ADD COLUMN pid BIGINT;
