-- Installing the extension, its settings and its objects.
CREATE EXTENSION orchestrator;

-- a fresh install is at the library's version: 0.1, then the updates
SELECT extversion FROM pg_extension WHERE extname = 'orchestrator';
SHOW orchestrator.events;
SHOW orchestrator.callback_timeout;
SHOW orchestrator.worker_idle_timeout;

-- the test cluster preloads the library and runs this database's DAGs
SELECT orchestrator.check_setup();
SHOW orchestrator.database;
SHOW orchestrator.max_workers;
-- (off: the definition suites run with the scheduler idle)
SHOW orchestrator.enabled;

-- settings under the prefix are checked: a typo is an error
SET orchestrator.max_worker = 3;

-- the objects
SELECT c.relname, c.relkind, c.relrowsecurity
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'orchestrator' AND c.relkind IN ('r', 'v')
 ORDER BY c.relname;
SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'orchestrator'
 ORDER BY p.proname;

-- nothing runs yet: the history views are empty
SELECT count(*) FROM orchestrator.dag_runs;
SELECT count(*) FROM orchestrator.task_instances;
SELECT count(*) FROM orchestrator.dags;
SELECT count(*) FROM orchestrator.tasks;

-- in a database other than orchestrator.database, CREATE EXTENSION says
-- that its DAGs will not run
CREATE DATABASE regress_orch_other;
\c regress_orch_other
CREATE EXTENSION orchestrator;
SELECT orchestrator.check_setup();
DROP EXTENSION orchestrator;
\c contrib_regression
DROP DATABASE regress_orch_other;

-- DROP and CREATE again
DROP EXTENSION orchestrator;
CREATE EXTENSION orchestrator;
