-- The hooks count their verdicts in a file now (`verdict_counts`): opening the database
-- cost a push more than deciding it.
DROP TABLE hook_decisions;
