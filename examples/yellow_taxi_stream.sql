-- The course pipeline, streamed: each month's CSV.GZ goes straight from the
-- server through gunzip into its table, with no intermediate copy, and a SQL
-- task then builds the month's rows of a daily summary table.  Same
-- schedule and months as examples/yellow_taxi.sql.
BEGIN;

SELECT orchestrator.create_dag(
	'yellow_taxi_stream',
	schedule => '0 6 2 * *',
	start_date => '2021-01-01 00:00+00',
	end_date => '2021-03-28 00:00+00',
	catchup => true,
	max_active_runs => 1,
	timezone => 'UTC',
	params => '{"base_url": "http://127.0.0.1:8000"}',
	description => 'NYC yellow taxi trips, streamed, with a daily summary');

SELECT orchestrator.add_task(
	'yellow_taxi_stream', 'ingest',
	orchestrator.copy_into('yellow_taxi_stream_{{ execution_date.strftime(''%Y_%m'') }}',
						   url => '{{ params.base_url }}/yellow_tripdata_{{ execution_date.strftime(''%Y-%m'') }}.csv.gz',
						   create_table => true, mode => 'replace'),
	retries => 2, retry_delay => '30 seconds');

-- The month's days, replaced as a whole, so that a rerun never counts twice.
SELECT orchestrator.add_task(
	'yellow_taxi_stream', 'daily_summary',
	orchestrator.sql($$
		CREATE TABLE IF NOT EXISTS yellow_taxi_daily (
			day date PRIMARY KEY,
			trips bigint NOT NULL,
			passengers bigint,
			miles numeric,
			fares numeric,
			tips numeric
		);
		DELETE FROM yellow_taxi_daily
		 WHERE day >= date_trunc('month', '{{ ds }}'::date)
		   AND day < date_trunc('month', '{{ ds }}'::date) + interval '1 month';
		INSERT INTO yellow_taxi_daily
		SELECT tpep_pickup_datetime::date, count(*), sum(passenger_count),
			   round(sum(trip_distance)::numeric, 2), round(sum(fare_amount)::numeric, 2),
			   round(sum(tip_amount)::numeric, 2)
		  FROM yellow_taxi_stream_{{ execution_date.strftime('%Y_%m') }}
		 WHERE tpep_pickup_datetime >= date_trunc('month', '{{ ds }}'::date)
		   AND tpep_pickup_datetime < date_trunc('month', '{{ ds }}'::date) + interval '1 month'
		 GROUP BY 1
	$$),
	upstream => '{ingest}');

COMMIT;
