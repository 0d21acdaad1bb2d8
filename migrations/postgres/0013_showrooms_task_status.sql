-- The status the showroom's task had in the tracker when the showroom was last deployed, or
-- when the poller of `lockstep serve` last saw it move (NULL: not known, the tracker did not
-- answer or does not hold the task). A showroom whose task has since moved to `[tasks]
-- returned` or `[tasks] delivered`, or is gone, is torn down.
ALTER TABLE showrooms ADD COLUMN task_status TEXT;
