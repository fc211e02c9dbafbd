-- Defining DAGs: create_dag, add_task, the operators, the views,
-- replacing, pausing and dropping.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';

-- operator constructors return the task's spec
SELECT orchestrator.sql('SELECT 1');
SELECT orchestrator.http_fetch('https://example.com/data_{{ ds }}.csv.gz');
SELECT orchestrator.http_fetch('http://127.0.0.1:8080/hook', method => 'post',
							   headers => '{"Content-Type": "application/json", "X-Run": "{{ run_id }}"}',
							   body => '{"ds": "{{ ds }}"}', timeout => '30 seconds', max_bytes => 1048576);
SELECT orchestrator.gunzip('download');
SELECT orchestrator.copy_into('yellow_taxi_{{ execution_date.strftime(''%Y_%m'') }}', input => 'unzip', create_table => true);
SELECT orchestrator.copy_into('public.trips', url => 'https://example.com/trips.csv', format => 'text',
							  header => false, delimiter => '|', null_string => '', compression => 'none',
							  mode => 'replace', create_table => true, columns => 'id bigint, at timestamptz, note text');
SELECT orchestrator.copy_into('yellow_taxi', url => 'https://example.com/{{ data_interval_start.strftime(''%Y-%m'') }}.csv.gz',
							  mode => 'partition', partition_by => 'tpep_pickup_datetime',
							  on_error => 'skip', reject_limit => 1000);

-- the course pipeline
SELECT orchestrator.create_dag('yellow_taxi', schedule => '0 6 2 * *',
							   start_date => '2021-01-01', end_date => '2021-03-28',
							   catchup => true, max_active_runs => 1,
							   params => '{"base_url": "http://127.0.0.1:8000"}',
							   description => 'NYC yellow taxi trips, one table per month');
SELECT orchestrator.add_task('yellow_taxi', 'download',
	orchestrator.http_fetch('{{ params.base_url }}/yellow_tripdata_{{ execution_date.strftime(''%Y-%m'') }}.csv.gz'),
	retries => 3, retry_delay => '1 minute', retry_exponential_backoff => true,
	max_retry_delay => '10 minutes', execution_timeout => '1 hour');
-- the task read as input is made upstream without being named
SELECT orchestrator.add_task('yellow_taxi', 'unzip', orchestrator.gunzip('download'));
SELECT orchestrator.add_task('yellow_taxi', 'ingest',
	orchestrator.copy_into('yellow_taxi_{{ execution_date.strftime(''%Y_%m'') }}', input => 'unzip', create_table => true),
	upstream => '{unzip}', retries => 2);
SELECT orchestrator.add_task('yellow_taxi', 'summary',
	orchestrator.sql('SELECT count(*) FROM yellow_taxi_{{ execution_date.strftime(''%Y_%m'') }}'),
	upstream => '{ingest,unzip,ingest}', trigger_rule => 'none_failed');
SELECT orchestrator.add_task('yellow_taxi', 'notify', orchestrator.sql('SELECT 1'),
	upstream => ARRAY['summary'], trigger_rule => 'always');

SELECT dag_id, owner, schedule, timezone, start_date, end_date, catchup, max_active_runs,
	   max_active_tasks, params, dagrun_timeout, paused, description, task_count
  FROM orchestrator.dags;
SELECT dag_id, task_id, operator, upstream, downstream, retries, retry_delay,
	   retry_exponential_backoff, max_retry_delay, execution_timeout, trigger_rule, position
  FROM orchestrator.tasks ORDER BY position;
SELECT task_id, spec FROM orchestrator.tasks WHERE task_id = 'download';

-- a manual-only DAG, in the session's time zone by default
SET TimeZone = 'Europe/Amsterdam';
SELECT orchestrator.create_dag('adhoc');
SET TimeZone = 'UTC';
SELECT orchestrator.create_dag('nightly', '30 2 * * *', timezone => 'America/New_York',
							   dagrun_timeout => '2 hours', max_active_tasks => 2, paused => true);
SELECT orchestrator.create_dag('once', '@once');
SELECT dag_id, schedule, timezone, paused, dagrun_timeout, max_active_tasks
  FROM orchestrator.dags ORDER BY dag_id;

-- pause and unpause
SELECT orchestrator.pause_dag('yellow_taxi');
SELECT orchestrator.unpause_dag('nightly');
SELECT dag_id, paused FROM orchestrator.dags ORDER BY dag_id;

-- replacing a definition drops its tasks (to be redefined in the same
-- transaction) and keeps its run history
INSERT INTO orchestrator.dag_run (dag_id, run_type, logical_date, state)
	VALUES ('yellow_taxi', 'manual', '2021-01-02 06:00+00', 'success');
INSERT INTO orchestrator.task_instance (run_id, task_id, state, try_number, max_tries)
	SELECT run_id, 'download', 'success', 1, 4 FROM orchestrator.dag_run;
BEGIN;
SELECT orchestrator.create_dag('yellow_taxi', '0 7 2 * *', start_date => '2021-01-01');
SELECT count(*) FROM orchestrator.tasks WHERE dag_id = 'yellow_taxi';
SELECT orchestrator.add_task('yellow_taxi', 'load',
	orchestrator.copy_into('yellow_taxi_{{ ds_nodash }}', url => '{{ params.base_url }}/{{ ds }}.csv'));
COMMIT;
SELECT dag_id, schedule, catchup, max_active_runs, params, paused, description, task_count
  FROM orchestrator.dags WHERE dag_id = 'yellow_taxi';
SELECT dag_id, task_id, operator, upstream FROM orchestrator.tasks WHERE dag_id = 'yellow_taxi';
SELECT dag_id, run_type, logical_date, state FROM orchestrator.dag_runs;
SELECT dag_id, task_id, state, try_number, max_tries FROM orchestrator.task_instances;
-- created_at stays, updated_at moves
SELECT created_at < updated_at AS replaced FROM orchestrator.dags WHERE dag_id = 'yellow_taxi';

-- a replacement that fails leaves the old definition as it was
SELECT orchestrator.create_dag('yellow_taxi', 'not a schedule');
SELECT dag_id, schedule, task_count FROM orchestrator.dags WHERE dag_id = 'yellow_taxi';

-- dropping removes the tasks and the history
SELECT orchestrator.drop_dag('yellow_taxi');
SELECT count(*) FROM orchestrator.dags WHERE dag_id = 'yellow_taxi';
SELECT count(*) FROM orchestrator.task;
SELECT count(*) FROM orchestrator.dag_run;
SELECT count(*) FROM orchestrator.task_instance;
SELECT orchestrator.drop_dag('yellow_taxi');
SELECT orchestrator.drop_dag('yellow_taxi', if_exists => true);

SELECT orchestrator.drop_dag(dag_id) FROM orchestrator.dags;
SELECT count(*) FROM orchestrator.dags;

-- sensors: operators like the others
SELECT orchestrator.sql_sensor('SELECT count(*) > 0 FROM t WHERE day = {{ ds | quote_literal }}');
SELECT orchestrator.http_sensor('https://example.com/{{ ds }}.csv.gz', poke_interval => '10 minutes',
								timeout => '7 days', soft_fail => true, method => 'get');
SELECT orchestrator.sql_sensor('SELECT true', timeout => '-1 day');
SELECT orchestrator.http_sensor('ftp://example.com/x');

-- assets: on_assets and outlets, duplicates left out; an event queued for
-- each DAG that waits for its asset, dropped when it no longer does
SELECT orchestrator.create_dag('on_data', on_assets => '{orders, orders, sales.daily}');
SELECT orchestrator.add_task('on_data', 'wait', orchestrator.sql_sensor('SELECT true'),
							 outlets => '{"x_{{ ds_nodash }}", "x_{{ ds_nodash }}", y}');
SELECT dag_id, on_assets FROM orchestrator.dags WHERE dag_id = 'on_data';
SELECT task_id, operator, outlets FROM orchestrator.tasks WHERE dag_id = 'on_data';
SELECT orchestrator.asset_updated('orders', '{"batch": 1}');
SELECT orchestrator.asset_updated('nobody.waits');
SELECT dag_id, asset, run_id FROM orchestrator.asset_queue ORDER BY event_id;
SELECT asset, extra, source_dag_id, triggered_runs FROM orchestrator.asset_events ORDER BY id;
SELECT name, events, consumers FROM orchestrator.assets ORDER BY name;
SELECT orchestrator.create_dag('on_data', on_assets => '{sales.daily}');
SELECT count(*) FROM orchestrator.asset_queue;
SELECT orchestrator.asset_updated('orders', '[1]');
SELECT orchestrator.asset_updated(NULL);
SELECT orchestrator.create_dag('bad_assets', on_assets => '{{a}, {b}}');
SELECT orchestrator.drop_dag('on_data');
SELECT count(*) FROM orchestrator.asset_queue;
