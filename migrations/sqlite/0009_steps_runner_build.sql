-- The build a step on a runner waits for (`<runner> <build request> <sha>`), so that a worker
-- resuming after a crash follows that build instead of forcing a second one.
ALTER TABLE steps ADD COLUMN runner_build TEXT;
