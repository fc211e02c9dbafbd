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

-- filters, as in Jinja, chained, with or without spaces around "|"
-- tojson: a JSON value; a string is quoted and escaped whatever it holds
SELECT orchestrator.render('{"error": {{ error | tojson }}}', '2021-01-02');
SELECT orchestrator.render('{{ params.s | tojson }}', '2021-01-02',
						   jsonb_build_object('s', E'say "hi"\\ C:\\path\nline 2\r\ttab \u0001\u001f é ☃ 𝄞'));
SELECT orchestrator.render('{{ params.s | tojson }}', '2021-01-02',
						   jsonb_build_object('s', E'say "hi"\\ C:\\path\nline 2\r\ttab \u0001\u001f é ☃ 𝄞'))::jsonb->>0
	   = E'say "hi"\\ C:\\path\nline 2\r\ttab \u0001\u001f é ☃ 𝄞' AS round_trips;
SELECT orchestrator.render('[{{params.n|tojson}}, {{ params.flag | tojson }}, {{ params.none | tojson }}, {{ params.list | tojson }}, {{ ds | tojson }}, {{ "it''s \"quoted\"" | tojson }}]',
						   '2021-01-02', '{"n": 42.5, "flag": true, "none": null, "list": [1, "a\"b"]}')::jsonb;
-- quote_literal, as PostgreSQL's: backslashes make an E'' string; JSON null is NULL
SELECT orchestrator.render('SELECT {{ params.a | quote_literal }}, {{ params.b | quote_literal }}, {{ params.c | quote_literal }}, {{ params.n | quote_literal }}, {{ params.none | quote_literal }}',
						   '2021-01-02', jsonb_build_object('a', 'O''Reilly', 'b', E'\\''); DROP TABLE t; --', 'c', E'x\ny', 'n', 7, 'none', null));
SELECT orchestrator.render('{{ params.b | quote_literal }}', '2021-01-02', jsonb_build_object('b', E'\\''); DROP TABLE t; --')) AS sql \gset
SELECT :sql = E'\\''); DROP TABLE t; --' AS literal_round_trips;
-- quote_ident, as PostgreSQL's
SELECT orchestrator.render('SELECT * FROM {{ params.s | quote_ident }}.{{ params.t | quote_ident }} JOIN {{ params.u | quote_ident }}',
						   '2021-01-02', '{"s": "staging", "t": "Trips \"2021\"; DROP TABLE users", "u": "select"}');
-- default: only for what is undefined (an absent params key, a context
-- variable with no value here), as Jinja's; with true also for '', null,
-- false, 0, [] and {}; its argument is an expression
SELECT orchestrator.render('{{ params.missing | default(''x'') }}|{{ params.empty | default(''x'') }}|{{ params.none | default(''x'') }}|{{ params.missing | default }}|{{ dag_id | default(''no dag'') }}|{{ params.missing|default(ds) }}',
						   '2021-01-02', '{"empty": "", "none": null}');
SELECT orchestrator.render('{{ params.empty | default(''x'', true) }}|{{ params.none | default(''x'', True) }}|{{ params.f | default(''x'', true) }}|{{ params.zero | default(''x'', true) }}|{{ params.arr | default(''x'', true) }}|{{ params.obj | default(''x'', true) }}|{{ params.small | default(''x'', true) }}|{{ params.s | default(''x'', false) }}',
						   '2021-01-02', '{"empty": "", "none": null, "f": false, "zero": 0.0, "arr": [], "obj": {}, "small": 0.001, "s": ""}');
SELECT orchestrator.render('{{ params.a | default(params.b | default(''last'')) | quote_literal }}', '2021-01-02');
-- chained
SELECT orchestrator.render('{{ params.missing | default("it''s") | tojson | quote_literal }}', '2021-01-02');
SELECT orchestrator.render('{{params.x|default("a}}b")|tojson}}', '2021-01-02');
SELECT orchestrator.render_table('t_{{ params.x | default(''a.b'') }}', '2021-01-02');
-- filter errors: unknown filters and malformed filters fail when defined
SELECT orchestrator.render('{{ ds | upper }}', '2021-01-02');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.render('{{ ds | }}', '2021-01-02');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.render('{{ ds || tojson }}', '2021-01-02');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.render('{{ | tojson }}', '2021-01-02');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.render('{{ ds | tojson(2) }}', '2021-01-02');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.render('{{ ds | default(''a'', maybe) }}', '2021-01-02');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.render('{{ ds | default(''a'', true, 1) }}', '2021-01-02');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.render('{{ ds | default(''a'' }}', '2021-01-02');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.render('{{ ds | default(, ''a'') }}', '2021-01-02');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.render('{{ ds | tojson quote_literal }}', '2021-01-02');
\echo :LAST_ERROR_SQLSTATE
-- a default does not make an unknown variable valid: that is a typo
SELECT orchestrator.render('{{ yesterday_ds | default(''x'') }}', '2021-01-02');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.render('{{ ds | default(nope) }}', '2021-01-02');
\echo :LAST_ERROR_SQLSTATE
-- undefined without a default: the same errors as without filters
SELECT orchestrator.render('{{ params.missing | tojson }}', '2021-01-02');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.render('{{ task_id | quote_ident }}', '2021-01-02');
\echo :LAST_ERROR_SQLSTATE

-- errors
SELECT orchestrator.render('{{ params.missing }}', '2021-01-02', '{"other": 1}');
SELECT orchestrator.render('{{ dag_id }}', '2021-01-02');
SELECT orchestrator.render('{{ yesterday_ds }}', '2021-01-02');
SELECT orchestrator.render('{{ ds.strftime(''%Y'') }}', '2021-01-02');
SELECT orchestrator.render('{{ logical_date.isoformat() }}', '2021-01-02');
SELECT orchestrator.render('{{ logical_date.strftime(%Y) }}', '2021-01-02');
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
