-- The course pipeline: each month's NYC yellow-taxi CSV.GZ is downloaded,
-- unzipped and loaded into a table of its own, for January to March 2021,
-- with catchup.  It is the Airflow DAG of the course, in SQL:
--
--   schedule "0 6 2 * *": 06:00 on the 2nd of each month; a run's logical
--   date is the start of its interval, so the run for January 2021 has
--   logical date 2021-01-02 06:00 and starts once that interval has ended.
--
-- Each run starts with a sensor that waits for the month's file to be
-- published (a HEAD request every 10 minutes, for up to a week, holding no
-- worker in between) instead of failing when it is late.  The load
-- publishes the asset "yellow_taxi.loaded_month", whose event commits with
-- the month's rows; a second DAG, yellow_taxi_monthly, runs on it and
-- builds that month's line of a summary table.
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
	'yellow_taxi', 'wait_for_file',
	orchestrator.http_sensor('{{ params.base_url }}/yellow_tripdata_{{ execution_date.strftime(''%Y-%m'') }}.csv.gz',
							 poke_interval => '10 minutes', timeout => '7 days'));

SELECT orchestrator.add_task(
	'yellow_taxi', 'download',
	orchestrator.http_fetch('{{ params.base_url }}/yellow_tripdata_{{ execution_date.strftime(''%Y-%m'') }}.csv.gz'),
	upstream => '{wait_for_file}',
	retries => 3, retry_delay => '30 seconds', retry_exponential_backoff => true);

SELECT orchestrator.add_task(
	'yellow_taxi', 'unzip',
	orchestrator.gunzip('download'));

-- (the table it loads, public.yellow_taxi_2021_01 say, is an asset too)
SELECT orchestrator.add_task(
	'yellow_taxi', 'ingest',
	orchestrator.copy_into('yellow_taxi_{{ execution_date.strftime(''%Y_%m'') }}',
						   input => 'unzip', create_table => true, mode => 'replace'),
	retries => 2, outlets => '{yellow_taxi.loaded_month}');

-- The summary, on the asset: a run each time a month is loaded (months
-- loaded before it could run make one run).  Each triggering event carries
-- its month's data interval; the month's line is replaced whole, so that a
-- month loaded again is never counted twice.
SELECT orchestrator.create_dag(
	'yellow_taxi_monthly',
	on_assets => '{yellow_taxi.loaded_month}',
	timezone => 'UTC',
	description => 'One line per loaded month of yellow taxi trips');

SELECT orchestrator.add_task(
	'yellow_taxi_monthly', 'summarize',
	orchestrator.sql($$
		CREATE TABLE IF NOT EXISTS yellow_taxi_monthly (
			month date PRIMARY KEY,
			trips bigint NOT NULL,
			passengers bigint,
			miles numeric,
			fares numeric,
			tips numeric,
			loaded_at timestamptz NOT NULL
		);
		DO $summary$
		DECLARE
			event jsonb;
			month date;
		BEGIN
			FOR event IN
				SELECT jsonb_array_elements({{ triggering_asset_events['yellow_taxi.loaded_month'] | default('[]') | quote_literal }}::jsonb)
			LOOP
				month := date_trunc('month', ((event #>> '{extra,data_interval_start}')::timestamptz AT TIME ZONE 'UTC'));
				EXECUTE format(
					'INSERT INTO yellow_taxi_monthly '
					'SELECT $1, count(*), sum(passenger_count), round(sum(trip_distance)::numeric, 2), '
					'       round(sum(fare_amount)::numeric, 2), round(sum(tip_amount)::numeric, 2), $2 '
					'FROM %I '
					'ON CONFLICT (month) DO UPDATE SET trips = excluded.trips, passengers = excluded.passengers, '
					'  miles = excluded.miles, fares = excluded.fares, tips = excluded.tips, loaded_at = excluded.loaded_at',
					'yellow_taxi_' || to_char(month, 'YYYY_MM'))
				USING month, (event ->> 'time')::timestamptz;
			END LOOP;
		END
		$summary$
	$$));

COMMIT;

-- Then:
--   SELECT * FROM yellow_taxi_monthly ORDER BY month;
--   SELECT name, last_event_at, consumers FROM orchestrator.assets;
--   SELECT orchestrator.dag_graph('yellow_taxi');
