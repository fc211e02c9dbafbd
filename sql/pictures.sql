-- Pictures of DAGs and runs: dag_graph() and grid(), with states made by
-- hand (the scheduler is idle here).
SET TimeZone = 'UTC';
SELECT setval('orchestrator.dag_run_run_id_seq', 2000, false);
SELECT orchestrator.create_dag('pic');
SELECT orchestrator.add_task('pic', 'download', orchestrator.http_fetch('https://example.com/{{ ds }}.csv.gz'));
SELECT orchestrator.add_task('pic', 'unzip', orchestrator.gunzip('download'));
SELECT orchestrator.add_task('pic', 'ingest', orchestrator.copy_into('t', input => 'unzip'));
SELECT orchestrator.add_task('pic', 'summary.daily', orchestrator.sql('SELECT 1'), '{ingest}');
SELECT orchestrator.add_task('pic', 'notify-me', orchestrator.sql('SELECT 1'), '{ingest,download}', trigger_rule => 'all_done');

-- the DAG alone
SELECT orchestrator.dag_graph('pic');
SELECT orchestrator.dag_graph('pic', 'dot');

-- three runs, in every state
SELECT orchestrator.trigger_dag('pic', logical_date => d) FROM unnest(ARRAY[
	'2021-01-02 06:00'::timestamptz, '2021-02-02 06:00', '2021-03-02 06:00']) d;
UPDATE orchestrator.dag_run SET state = CASE run_id WHEN 2000 THEN 'success' WHEN 2001 THEN 'failed' ELSE 'running' END;
INSERT INTO orchestrator.task_instance (run_id, task_id, state, max_tries) VALUES
	(2000, 'download', 'success', 1), (2000, 'unzip', 'success', 1), (2000, 'ingest', 'success', 1),
	(2000, 'summary.daily', 'success', 1), (2000, 'notify-me', 'success', 1),
	(2001, 'download', 'success', 1), (2001, 'unzip', 'failed', 1), (2001, 'ingest', 'upstream_failed', 1),
	(2001, 'summary.daily', 'upstream_failed', 1), (2001, 'notify-me', 'success', 1),
	(2002, 'download', 'success', 1), (2002, 'unzip', 'up_for_retry', 2), (2002, 'ingest', 'scheduled', 1),
	(2002, 'summary.daily', 'scheduled', 1), (2002, 'notify-me', 'skipped', 1);

SELECT orchestrator.dag_graph('pic', run_id => 2001);
SELECT orchestrator.dag_graph('pic', 'dot', 2002);
SELECT * FROM orchestrator.grid('pic');
SELECT * FROM orchestrator.grid('pic', runs => 2);

-- errors, and what another role sees
SELECT orchestrator.dag_graph('nope');
SELECT orchestrator.dag_graph('pic', 'svg');
SELECT orchestrator.dag_graph('pic', run_id => 1);
SELECT * FROM orchestrator.grid('pic', 0);
CREATE ROLE regress_orch_viewer NOLOGIN;
GRANT USAGE ON SCHEMA orchestrator TO regress_orch_viewer;
SET ROLE regress_orch_viewer;
SELECT orchestrator.dag_graph('pic');
SELECT * FROM orchestrator.grid('pic');
RESET ROLE;
REVOKE USAGE ON SCHEMA orchestrator FROM regress_orch_viewer;
DROP ROLE regress_orch_viewer;

-- a DAG without runs
SELECT orchestrator.create_dag('lonely');
SELECT * FROM orchestrator.grid('lonely');
SELECT orchestrator.dag_graph('lonely');

SELECT orchestrator.drop_dag(dag_id) FROM orchestrator.dags;
