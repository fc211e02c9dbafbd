-- Yellow and green trips for a month, with one mapped pipeline: download,
-- unzip and ingest each run once per colour (dynamic task mapping, as
-- Airflow's expand()).  "download" is mapped over the colours; "unzip"
-- reads download's artifact and "ingest" unzip's, so both are mapped the
-- same way: instance i reads instance i's output, and sees its colour as
-- {{ item }}.  Each colour goes into a table of its own.  A failed
-- download is retried alone; clear_task(run, 'download', map_index => 1)
-- runs green again without touching yellow.
--
-- To take the colours from a table instead, give download
--   expand_query => 'SELECT colour FROM my_colours ORDER BY colour'
-- and write {{ item.colour }} in its templates (a row is a JSON object).
BEGIN;

SELECT orchestrator.create_dag(
	'taxi_colours',
	schedule => '0 6 2 * *',
	start_date => '2021-01-01 00:00+00',
	end_date => '2021-01-28 00:00+00',
	catchup => true,
	timezone => 'UTC',
	params => '{"base_url": "http://127.0.0.1:8000"}',
	description => 'NYC yellow and green taxi trips, one table per colour and month');

SELECT orchestrator.add_task(
	'taxi_colours', 'download',
	orchestrator.http_fetch('{{ params.base_url }}/{{ item }}_tripdata_{{ execution_date.strftime(''%Y-%m'') }}.csv.gz'),
	retries => 3, retry_delay => '30 seconds', retry_exponential_backoff => true,
	expand => '["yellow", "green"]');

SELECT orchestrator.add_task(
	'taxi_colours', 'unzip',
	orchestrator.gunzip('download'));

SELECT orchestrator.add_task(
	'taxi_colours', 'ingest',
	orchestrator.copy_into('{{ item }}_trips_{{ execution_date.strftime(''%Y_%m'') }}',
						   input => 'unzip', create_table => true, mode => 'replace'),
	retries => 2);

COMMIT;
