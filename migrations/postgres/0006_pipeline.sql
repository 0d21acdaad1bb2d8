-- The pipelined queue: a running delivery is the head of the train (`candidate` false), or a
-- candidate prepared speculatively behind it (`candidate` true), never deployed. `held` is
-- the failure of a candidate's preparation, kept unreported while deliveries ahead of it are
-- unresolved; `built_on` names the deliveries ahead whose commits its bases contain
-- (`#12, #11`); `discards` counts the preparations thrown away because a base changed.
ALTER TABLE deliveries ADD COLUMN candidate BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE deliveries ADD COLUMN held TEXT NOT NULL DEFAULT '';
ALTER TABLE deliveries ADD COLUMN built_on TEXT NOT NULL DEFAULT '';
ALTER TABLE deliveries ADD COLUMN discards BIGINT NOT NULL DEFAULT 0;
