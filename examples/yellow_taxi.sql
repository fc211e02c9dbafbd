-- The course pipeline: each month's NYC yellow-taxi CSV.GZ is downloaded,
-- unzipped and loaded into a table of its own, for January to March 2021,
-- with catchup.  It is the Airflow DAG of the course, in SQL:
--
--   schedule "0 6 2 * *": 06:00 on the 2nd of each month; a run's logical
--   date is the start of its interval, so the run for January 2021 has
--   logical date 2021-01-02 06:00 and starts once that interval has ended.
--
-- Define it in one transaction so that no one sees it half-defined.
BEGIN;

SELECT orchestrator.create_dag(
	'yellow_taxi',
	schedule => '0 6 2 * *',
	start_date => '2021-01-01 00:00+00',
	end_date => '2021-03-28 00:00+00',
	catchup => true,
	max_active_runs => 1,
	timezone => 'UTC',
	params => '{"base_url": "http://127.0.0.1:8000"}',
	description => 'NYC yellow taxi trips, one table per month');

SELECT orchestrator.add_task(
	'yellow_taxi', 'download',
	orchestrator.http_fetch('{{ params.base_url }}/yellow_tripdata_{{ execution_date.strftime(''%Y-%m'') }}.csv.gz'),
	retries => 3, retry_delay => '30 seconds', retry_exponential_backoff => true);

SELECT orchestrator.add_task(
	'yellow_taxi', 'unzip',
	orchestrator.gunzip('download'));

SELECT orchestrator.add_task(
	'yellow_taxi', 'ingest',
	orchestrator.copy_into('yellow_taxi_{{ execution_date.strftime(''%Y_%m'') }}',
						   input => 'unzip', create_table => true, mode => 'replace'),
	retries => 2);

COMMIT;
