-- The run API's results and errors, with the scheduler idle
-- (orchestrator.enabled = off): runs are created and changed, never run.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
-- run ids appear in messages: start them at a known number
SELECT setval('orchestrator.dag_run_run_id_seq', 1000, false);
SELECT orchestrator.create_dag('r', '@daily', start_date => '2099-01-01');
SELECT orchestrator.add_task('r', 'a', orchestrator.sql('SELECT 1'));
SELECT orchestrator.add_task('r', 'b', orchestrator.sql('SELECT 1'), '{a}');
SELECT orchestrator.add_task('r', 'c', orchestrator.sql('SELECT 1'), '{b}');
SELECT orchestrator.add_task('r', 'side', orchestrator.sql('SELECT 1'), '{a}');
SELECT orchestrator.create_dag('manual_only');

-- trigger_dag
SELECT orchestrator.trigger_dag('r', '{"k": 1}', '2021-01-01 06:00') > 0 AS created;
SELECT dag_id, run_type, logical_date, data_interval_start, data_interval_end, state, conf
  FROM orchestrator.dag_runs;
SELECT orchestrator.trigger_dag('r', logical_date => '2021-01-01 06:00');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.trigger_dag('r', '[1]');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.trigger_dag('r', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.trigger_dag('r', logical_date => 'infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.trigger_dag('nope');
\echo :LAST_ERROR_SQLSTATE
-- a DAG with no task yet makes no run
SELECT orchestrator.trigger_dag('manual_only');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'manual_only';

-- backfill
SELECT orchestrator.backfill('r', '2021-02-01', '2021-02-03 12:00');
SELECT orchestrator.backfill('r', '2021-02-02', '2021-02-04');
SELECT run_type, logical_date, data_interval_end, state FROM orchestrator.dag_runs
 WHERE run_type = 'backfill' ORDER BY logical_date;
SELECT orchestrator.backfill('r', '2021-02-04', '2021-02-01');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.backfill('manual_only', '2021-02-01', '2021-02-04');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.create_dag('once', '@once');
SELECT orchestrator.backfill('once', '2021-02-01', '2021-02-04');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.create_dag('no_tasks_yet', '@daily', catchup => true);
SELECT orchestrator.backfill('no_tasks_yet', '2021-02-01', '2021-02-04');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('no_tasks_yet', 't', orchestrator.sql('SELECT 1'));
SELECT orchestrator.backfill('no_tasks_yet', '2021-02-01', '2021-02-04');
SELECT orchestrator.trigger_dag('no_tasks_yet', logical_date => '2021-03-01') > 0 AS created;
SELECT orchestrator.create_dag('minutely', '* * * * *');
SELECT orchestrator.add_task('minutely', 't', orchestrator.sql('SELECT 1'));
SELECT orchestrator.backfill('minutely', '2021-01-01', '2021-02-01');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'minutely';

-- a manual run of a scheduled DAG covers the last complete interval before
-- its logical date, as in Airflow; without a schedule, or @once, none
SELECT orchestrator.trigger_dag('minutely', logical_date => '2021-06-01 10:00:30') > 0 AS created;
SELECT orchestrator.trigger_dag('no_tasks_yet', logical_date => '2021-03-05 00:00') > 0 AS created;
SELECT orchestrator.create_dag('yearly', '0 0 1 1 *', timezone => 'America/New_York');
SELECT orchestrator.add_task('yearly', 't', orchestrator.sql('SELECT 1'));
SELECT orchestrator.trigger_dag('yearly', logical_date => '2021-06-15 12:00') > 0 AS created;
SELECT orchestrator.add_task('manual_only', 't', orchestrator.sql('SELECT 1'));
SELECT orchestrator.trigger_dag('manual_only', logical_date => '2021-06-15 12:00') > 0 AS created;
SELECT orchestrator.add_task('once', 't', orchestrator.sql('SELECT 1'));
SELECT orchestrator.trigger_dag('once', logical_date => '2021-06-15 12:00') > 0 AS created;
SELECT dag_id, logical_date, data_interval_start, data_interval_end
  FROM orchestrator.dag_runs
 WHERE run_type = 'manual' AND dag_id IN ('minutely', 'no_tasks_yet', 'yearly', 'manual_only', 'once')
 ORDER BY dag_id, logical_date;

-- wait_run returns the state when its timeout passes
SELECT run_id AS first_run FROM orchestrator.dag_runs WHERE run_type = 'manual' AND dag_id = 'r' \gset
SELECT orchestrator.wait_run(:first_run, '0.1 seconds');
SELECT orchestrator.wait_run(-1, '0.1 seconds');
\echo :LAST_ERROR_SQLSTATE
-- a transaction-wide snapshot would never see the run change
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT orchestrator.wait_run(:first_run, '0.1 seconds');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT orchestrator.wait_run(:first_run, '0.1 seconds');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN ISOLATION LEVEL READ COMMITTED;
SELECT orchestrator.wait_run(:first_run, '0.1 seconds');
COMMIT;

-- clear_task, on task instances made by hand as the scheduler would
INSERT INTO orchestrator.task_instance (run_id, task_id, state, try_number, max_tries, error)
VALUES (:first_run, 'a', 'success', 1, 1, NULL),
	   (:first_run, 'b', 'failed', 1, 1, 'boom'),
	   (:first_run, 'c', 'upstream_failed', 0, 1, NULL),
	   (:first_run, 'side', 'success', 1, 1, NULL);
UPDATE orchestrator.dag_run SET state = 'failed', finished_at = now() WHERE run_id = :first_run;
SELECT orchestrator.clear_task(:first_run, 'b');
SELECT task_id, state, try_number, max_tries, error FROM orchestrator.task_instances
 WHERE run_id = :first_run ORDER BY task_id;
SELECT state, finished_at FROM orchestrator.dag_runs WHERE run_id = :first_run;
SELECT orchestrator.clear_task(:first_run, 'a', downstream => false);
SELECT orchestrator.clear_task(:first_run, 'a');
UPDATE orchestrator.task_instance SET state = 'running' WHERE run_id = :first_run AND task_id = 'c';
SELECT orchestrator.clear_task(:first_run, 'a');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.clear_task(:first_run, 'side');
SELECT orchestrator.clear_task(:first_run, 'nope');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.clear_task(-1, 'a');
\echo :LAST_ERROR_SQLSTATE

-- cancel_run
SELECT orchestrator.cancel_run(:first_run);
SELECT task_id, state, error FROM orchestrator.task_instances WHERE run_id = :first_run ORDER BY task_id;
SELECT state, finished_at IS NOT NULL AS ended FROM orchestrator.dag_runs WHERE run_id = :first_run;
SELECT orchestrator.cancel_run(:first_run);
SELECT orchestrator.cancel_run(-1);
\echo :LAST_ERROR_SQLSTATE

-- another role can neither see nor touch these runs
CREATE ROLE regress_orch_mallory NOLOGIN;
GRANT USAGE ON SCHEMA orchestrator TO regress_orch_mallory;
SET ROLE regress_orch_mallory;
SELECT count(*) FROM orchestrator.dag_runs;
SELECT orchestrator.trigger_dag('r');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.backfill('r', '2021-03-01', '2021-03-02');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.clear_task(:first_run, 'a');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.cancel_run(:first_run);
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.wait_run(:first_run, '0.1 seconds');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
REVOKE USAGE ON SCHEMA orchestrator FROM regress_orch_mallory;
DROP ROLE regress_orch_mallory;

-- dropping a DAG removes its runs
SELECT orchestrator.drop_dag(dag_id) FROM orchestrator.dags;
SELECT count(*) FROM orchestrator.dag_run;
