-- Bad input never crashes a backend: thousands of random schedules,
-- templates, table names and operator specs, from a fixed seed.  Each call
-- either works or raises a clean ERROR; the counts are stable.
SET TimeZone = 'UTC';
SELECT setseed(0.42);

CREATE FUNCTION pg_temp.random_text(alphabet text, maxlen int) RETURNS text
LANGUAGE sql VOLATILE AS $$
	SELECT string_agg(substr(alphabet, 1 + floor(random() * length(alphabet))::int, 1), '')
	  FROM generate_series(1, floor(random() * maxlen)::int)
$$;

-- one cron field item for a field whose values end at hi: mostly
-- well-formed, values sometimes just out of range
CREATE FUNCTION pg_temp.cron_item(hi int) RETURNS text
LANGUAGE sql VOLATILE AS $$
	SELECT (ARRAY['*', '*', '*/' || (1 + floor(random() * (hi + 1))),
				  floor(random() * (hi + 2))::text,
				  floor(random() * (hi + 2)) || '-' || floor(random() * (hi + 2)),
				  floor(random() * (hi + 2)) || '-' || floor(random() * (hi + 2)) || '/' || floor(random() * 8),
				  floor(random() * (hi + 2)) || '/' || (1 + floor(random() * 8)),
				  floor(random() * (hi + 2)) || ',' || floor(random() * (hi + 2)),
				  CASE hi WHEN 7 THEN 'mon-fri' WHEN 12 THEN 'jan-mar' ELSE '*' END,
				  CASE hi WHEN 7 THEN 'sat,sun' WHEN 12 THEN 'feb' ELSE '*/5' END])[1 + floor(random() * 10)::int]
$$;

CREATE FUNCTION pg_temp.fuzz(kind text, n int) RETURNS TABLE (ok int, errors int, other_errors int)
LANGUAGE plpgsql AS $$
DECLARE
	input text;
	state text;
	after timestamptz;
	zone text;
BEGIN
	ok := 0; errors := 0; other_errors := 0;
	FOR i IN 1..n LOOP
		BEGIN
			CASE kind
			WHEN 'cron' THEN
				input := pg_temp.random_text('0123456789*/,- 	@abcdefjlmnorstuwy', 24);
				PERFORM orchestrator.cron_next(coalesce(input, ''), '2021-01-01', 'Europe/Amsterdam', 3);
			WHEN 'cron-fields' THEN
				input := concat_ws(' ', pg_temp.cron_item(59), pg_temp.cron_item(23),
								   pg_temp.cron_item(31), pg_temp.cron_item(12), pg_temp.cron_item(7));
				after := '2021-03-01'::timestamptz + random() * interval '300 days';
				zone := (ARRAY['America/New_York', 'Europe/London', 'Australia/Lord_Howe', 'UTC', 'Asia/Kathmandu'])[1 + floor(random() * 5)::int];
				-- the times come in strictly increasing order, all after "after"
				IF EXISTS (SELECT 1
							 FROM (SELECT t, lag(t, 1, after) OVER (ORDER BY ord) AS prev
									 FROM orchestrator.cron_next(input, after, zone, 5) WITH ORDINALITY AS x(t, ord)) s
							WHERE t <= prev) THEN
					RAISE WARNING 'times out of order for "%" after % in %', input, after, zone;
					other_errors := other_errors + 1;
				END IF;
			WHEN 'template' THEN
				input := pg_temp.random_text('{{}}{%#''".()[]|_ dstlogicaexunparmf%Y', 40);
				PERFORM orchestrator.render(coalesce(input, ''), '2021-01-01', '{"a": 1, "s": "x"}');
			WHEN 'template-exprs' THEN
				input := '{{ ' || (ARRAY['ds', 'ts', 'logical_date', 'params', 'params.a', 'execution_date'])[1 + floor(random() * 6)::int]
						 || pg_temp.random_text('.strftime(''%Yfmd")[]', 16) || ' }}';
				PERFORM orchestrator.render(input, '2021-01-01', '{"a": 1}');
			WHEN 'template-filters' THEN
				input := '{{ ' || (ARRAY['ds', 'error', 'params.a', 'params.s', 'params.no', 'dag_id', '''x'''])[1 + floor(random() * 7)::int]
						 || (ARRAY['', ' | tojson', '|quote_literal', ' | quote_ident', ' | default(''d'')', ' | default(params.s, true)', ' | default'])[1 + floor(random() * 7)::int]
						 || pg_temp.random_text('|tojsquote_lidefau(''",) ', 14) || ' }}';
				PERFORM orchestrator.render(input, '2021-01-01', '{"a": 1, "s": "x''y\\z"}');
			WHEN 'table' THEN
				input := pg_temp.random_text('ab."{}_ ;$ds', 20);
				PERFORM orchestrator.render_table(coalesce(input, ''), '2021-01-01');
			WHEN 'spec' THEN
				input := '{"operator": "' || (ARRAY['sql', 'http_fetch', 'gunzip', 'copy_into', 'x'])[1 + floor(random() * 5)::int]
						 || '", "' || (ARRAY['query', 'url', 'input', 'target', 'headers', 'timeout', 'max_bytes', 'columns', 'delimiter', 'create'])[1 + floor(random() * 10)::int]
						 || '": ' || (ARRAY['1', '"x"', 'null', 'true', '{}', '[]', '"https://a/{{ds}}"', '"-1 day"', '"a int"', '{"h": "{{ts}}"}'])[1 + floor(random() * 10)::int]
						 || '}';
				PERFORM orchestrator.validate_operator(input::jsonb);
			END CASE;
			ok := ok + 1;
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE;
			-- the errors bad input should get; anything else is a bug
			IF state IN ('22023', '42601', '42602', '42704', '42883', '22007', '22008', '22015', '22004') THEN
				errors := errors + 1;
			ELSE
				RAISE WARNING 'unexpected error % for %: %', state, kind, input;
				other_errors := other_errors + 1;
			END IF;
		END;
	END LOOP;
	RETURN NEXT;
END $$;

SELECT 'cron' AS kind, * FROM pg_temp.fuzz('cron', 3000);
SELECT 'cron-fields' AS kind, * FROM pg_temp.fuzz('cron-fields', 3000);
SELECT 'template' AS kind, * FROM pg_temp.fuzz('template', 3000);
SELECT 'template-exprs' AS kind, * FROM pg_temp.fuzz('template-exprs', 3000);
SELECT 'table' AS kind, * FROM pg_temp.fuzz('table', 3000);
SELECT 'spec' AS kind, * FROM pg_temp.fuzz('spec', 3000);
SELECT 'template-filters' AS kind, * FROM pg_temp.fuzz('template-filters', 3000);
