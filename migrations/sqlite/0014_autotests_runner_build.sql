-- The build of a `[runners.*]` CI that an autotest's step last ran as, recorded as
-- `<step> <runner> <build request> <sha>` when the build is forced: a restart stops it if the
-- worker was killed while it ran, and `lockstep logs --autotest` fetches the end of its log.
ALTER TABLE autotests ADD COLUMN runner_build TEXT;
