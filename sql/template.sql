-- Templates: orchestrator.render(template, logical_date, params, ...)
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';

-- the Airflow variables
SELECT orchestrator.render('{{ ds }}|{{ds_nodash}}|{{ ts }}|{{ ts_nodash }}|{{ ts_nodash_with_tz }}',
						   '2021-01-02 06:00+00');
SELECT orchestrator.render('{{ logical_date }}|{{ execution_date }}|{{ data_interval_start }}|{{ data_interval_end }}',
						   '2021-01-02 06:00+00', data_interval_end => '2021-02-02 06:00+00');
SELECT orchestrator.render('{{ run_id }}|{{ dag_id }}|{{ task_id }}', '2021-01-02 06:00+00',
						   dag_id => 'yellow_taxi', task_id => 'load', run_id => 'scheduled__2021-01-02T06:00:00+00:00');
-- run_id defaults to Airflow's manual run id
SELECT orchestrator.render('{{ run_id }}', '2021-01-02 06:00:00.25+00');
-- fractional seconds, as Python's isoformat() shows them
SELECT orchestrator.render('{{ ts }}', '2021-01-02 06:00:00.25+00');

-- strftime, so a string copied from an Airflow DAG works unchanged
SELECT orchestrator.render('yellow_taxi_{{ execution_date.strftime(''%Y_%m'') }}', '2021-01-02 06:00+00');
SELECT orchestrator.render('https://example.com/yellow_tripdata_{{ execution_date.strftime("%Y-%m") }}.csv.gz',
						   '2021-03-02 06:00+00');
SELECT orchestrator.render('{{ logical_date.strftime(''%Y-%m-%dT%H:%M:%S.%f %j %a %A %b %B %y %p %I %% %%f'') }}',
						   '2021-07-04 15:06:07.000089+00');
SELECT orchestrator.render('{{ data_interval_end.strftime(''%d/%m/%Y'') }}', '2021-01-02 06:00+00',
						   data_interval_end => '2021-02-02 06:00+00');
-- dates render in UTC whatever the session's time zone, as in Airflow
SET TimeZone = 'Asia/Tokyo';
SELECT orchestrator.render('{{ ds }} {{ ts }}', '2021-01-02 00:30+09');
SET TimeZone = 'UTC';

-- params: strings, numbers, booleans, null, JSON; both spellings
SELECT orchestrator.render('{{ params.table }}/{{ params["n"] }}/{{ params[''flag''] }}/{{ params.none }}/{{ params.list }}',
						   '2021-01-02', '{"table": "trips", "n": 42.5, "flag": true, "none": null, "list": [1, "a"]}');
-- text without templates, quoted strings, braces that are not templates
SELECT orchestrator.render('plain { text } {{ ''{{'' }} {{"}}"}}', '2021-01-02');
SELECT orchestrator.render('', '2021-01-02');
SELECT orchestrator.render(NULL, '2021-01-02');

-- errors
SELECT orchestrator.render('{{ params.missing }}', '2021-01-02', '{"other": 1}');
SELECT orchestrator.render('{{ dag_id }}', '2021-01-02');
SELECT orchestrator.render('{{ yesterday_ds }}', '2021-01-02');
SELECT orchestrator.render('{{ ds.strftime(''%Y'') }}', '2021-01-02');
SELECT orchestrator.render('{{ logical_date.isoformat() }}', '2021-01-02');
SELECT orchestrator.render('{{ logical_date.strftime(%Y) }}', '2021-01-02');
SELECT orchestrator.render('{{ ds | upper }}', '2021-01-02');
SELECT orchestrator.render('{% if ds %}x{% endif %}', '2021-01-02');
SELECT orchestrator.render('{# note #}', '2021-01-02');
SELECT orchestrator.render('{{ ds ', '2021-01-02');
SELECT orchestrator.render('{{ }}', '2021-01-02');
SELECT orchestrator.render('{{ ''unterminated }}', '2021-01-02');
SELECT orchestrator.render('{{ params }}', '2021-01-02');
SELECT orchestrator.render('{{ ds }}', NULL);

-- table names: literal text follows SQL's identifier rules, what a template
-- renders is one identifier, as if quoted: never spliced into SQL
SELECT orchestrator.render_table('yellow_taxi_{{ execution_date.strftime(''%Y_%m'') }}', '2021-01-02');
SELECT orchestrator.render_table('Staging.Yellow_{{ ds_nodash }}', '2021-01-02');
SELECT orchestrator.render_table('"Staging"."Mixed Case ""x"""', '2021-01-02');
SELECT orchestrator.render_table('db.public.t', '2021-01-02');
SELECT orchestrator.render_table('t_{{ params.suffix }}', '2021-01-02', '{"suffix": "x; DROP TABLE users; --"}');
SELECT orchestrator.render_table('{{ params.name }}', '2021-01-02', '{"name": "other.table"}');
SELECT orchestrator.render_table('t_{{ logical_date.strftime(''%Y.%m'') }}', '2021-01-02');
-- errors
SELECT orchestrator.render_table('my table', '2021-01-02');
SELECT orchestrator.render_table('a..b', '2021-01-02');
SELECT orchestrator.render_table('a.b.c.d', '2021-01-02');
SELECT orchestrator.render_table('"open', '2021-01-02');
SELECT orchestrator.render_table('{{ params.name }}', '2021-01-02', '{"name": ""}');
SELECT orchestrator.render_table('t_{{ params.name }}', '2021-01-02', json_build_object('name', repeat('x', 70))::jsonb);
SELECT orchestrator.render_table('t_{{ nope }}', '2021-01-02');
