-- The course pipeline into one table partitioned by month, as a modern
-- schema keeps it: each run streams its month's CSV.GZ into the partition
-- of exactly its data interval, [data_interval_start, data_interval_end),
-- created if missing and replaced whole if present, in the same transaction
-- as the task's state.  Readers of the other months are never blocked.
--
-- Real files hold rows that do not fit (a line cut short, a value that
-- does not parse, a pickup far outside the month): on_error => 'skip' sets
-- them aside in orchestrator.rejects, with their line numbers, and loads the
-- rest; more than reject_limit of them fail the load, which then loads
-- nothing.
--
--   schedule '@monthly': midnight on the 1st, so that each run's interval is
--   a calendar month (the run for January has logical date 2021-01-01 and
--   starts on 2021-02-01).  The URL is built from data_interval_start, so a
--   manual run (trigger_dag), which gets the last complete month before its
--   logical date, loads that month too.
BEGIN;

CREATE TABLE IF NOT EXISTS yellow_taxi (
	"VendorID" bigint,
	tpep_pickup_datetime timestamp NOT NULL,
	tpep_dropoff_datetime timestamp,
	passenger_count bigint,
	trip_distance double precision,
	"RatecodeID" bigint,
	store_and_fwd_flag text,
	"PULocationID" bigint,
	"DOLocationID" bigint,
	payment_type bigint,
	fare_amount double precision,
	extra double precision,
	mta_tax double precision,
	tip_amount double precision,
	tolls_amount double precision,
	improvement_surcharge double precision,
	total_amount double precision,
	congestion_surcharge double precision
) PARTITION BY RANGE (tpep_pickup_datetime);
CREATE INDEX IF NOT EXISTS yellow_taxi_pickup_idx ON yellow_taxi (tpep_pickup_datetime);

SELECT orchestrator.create_dag(
	'yellow_taxi_partitioned',
	schedule => '@monthly',
	start_date => '2021-01-01 00:00+00',
	end_date => '2021-03-31 00:00+00',
	catchup => true,
	timezone => 'UTC',
	params => '{"base_url": "http://127.0.0.1:8000"}',
	description => 'NYC yellow taxi trips, one partition per month, bad rows set aside');

SELECT orchestrator.add_task(
	'yellow_taxi_partitioned', 'ingest',
	orchestrator.copy_into('yellow_taxi',
						   url => '{{ params.base_url }}/yellow_tripdata_{{ data_interval_start.strftime(''%Y-%m'') }}.csv.gz',
						   mode => 'partition', partition_by => 'tpep_pickup_datetime',
						   on_error => 'skip', reject_limit => 1000),
	retries => 2, retry_delay => '30 seconds');

COMMIT;

-- Then:
--   SELECT tableoid::regclass, count(*) FROM yellow_taxi GROUP BY 1;
--   SELECT run_id, rows_loaded, rows_rejected FROM orchestrator.task_instances
--    WHERE dag_id = 'yellow_taxi_partitioned';
--   SELECT run_id, line_number, error, raw_line FROM orchestrator.rejects ORDER BY 1, 2;
