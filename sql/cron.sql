-- Cron schedules: orchestrator.cron_next(schedule, after, timezone, n)
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';

-- fields: lists, ranges, steps, names
SELECT * FROM orchestrator.cron_next('*/20 * * * *', '2021-01-01 00:00', 'UTC', 4);
SELECT * FROM orchestrator.cron_next('5,10-12 3 * * *', '2021-01-01 00:00', 'UTC', 5);
SELECT * FROM orchestrator.cron_next('0 9-17/4 * * *', '2021-01-01 00:00', 'UTC', 4);
SELECT * FROM orchestrator.cron_next('15/20 0 * * *', '2021-01-01 00:00', 'UTC', 4);
SELECT * FROM orchestrator.cron_next('0 0 1 jan,JUL *', '2021-01-01 00:00', 'UTC', 3);
SELECT * FROM orchestrator.cron_next('0 0 * feb-apr mon', '2021-01-01 00:00', 'UTC', 3);
SELECT * FROM orchestrator.cron_next('0 12 * * mon-fri', '2021-01-01 00:00', 'UTC', 6);
SELECT to_char(t, 'Dy YYYY-MM-DD') FROM orchestrator.cron_next('0 0 * * fri-sun', '2021-01-01 00:00', 'UTC', 6) t;
-- 7 is Sunday, as 0 is
SELECT to_char(t, 'Dy YYYY-MM-DD') FROM orchestrator.cron_next('0 0 * * 7', '2021-01-01 00:00', 'UTC', 2) t;
-- the first of the month or any Friday (Vixie cron's rule: either day field)
SELECT to_char(t, 'Dy YYYY-MM-DD') FROM orchestrator.cron_next('0 0 1 * 5', '2021-01-01 00:00', 'UTC', 6) t;
-- with one day field starting with *, both must match: Fridays only
SELECT to_char(t, 'Dy YYYY-MM-DD') FROM orchestrator.cron_next('0 0 */1 * 5', '2021-01-01 00:00', 'UTC', 3) t;
-- leap day
SELECT * FROM orchestrator.cron_next('0 0 29 2 *', '2021-01-01 00:00', 'UTC', 2);
-- strictly after
SELECT * FROM orchestrator.cron_next('0 6 2 * *', '2021-01-02 06:00', 'UTC', 1);
SELECT * FROM orchestrator.cron_next('0 6 2 * *', '2021-01-02 05:59:59.999999', 'UTC', 1);
-- the course DAG's schedule
SELECT * FROM orchestrator.cron_next('0 6 2 * *', '2021-01-01', 'UTC', 3);

-- presets
SELECT * FROM orchestrator.cron_next('@hourly', '2021-01-01 00:30', 'UTC', 2);
SELECT * FROM orchestrator.cron_next('@daily', '2021-01-01 00:30', 'UTC', 2);
SELECT * FROM orchestrator.cron_next('@weekly', '2021-01-01 00:30', 'UTC', 2);
SELECT * FROM orchestrator.cron_next('@monthly', '2021-01-01 00:30', 'UTC', 2);
SELECT * FROM orchestrator.cron_next('@yearly', '2021-01-01 00:30', 'UTC', 2);
SELECT * FROM orchestrator.cron_next('@annually', '2021-01-01 00:30', 'UTC', 1);
SELECT * FROM orchestrator.cron_next('@midnight', '2021-01-01 00:30', 'UTC', 1);
-- @once has no recurrence
SELECT count(*) FROM orchestrator.cron_next('@once', '2021-01-01 00:30', 'UTC', 5);
SELECT count(*) FROM orchestrator.cron_next('* * * * *', '2021-01-01 00:30', 'UTC', 0);

-- time zones: a daily 06:00 in Amsterdam is 05:00 UTC in winter, 04:00 in summer
SELECT * FROM orchestrator.cron_next('0 6 * * *', '2021-03-26 12:00', 'Europe/Amsterdam', 4);

-- daylight saving time, New York: clocks go from 02:00 to 03:00 on
-- 2021-03-14 and from 02:00 back to 01:00 on 2021-11-07.
SET TimeZone = 'America/New_York';
-- a job at 02:30 runs once on the spring-forward day, at 03:30 EDT
SELECT * FROM orchestrator.cron_next('30 2 * * *', '2021-03-12 12:00', 'America/New_York', 4);
-- and once on the fall-back day, at the first 01:30
SELECT * FROM orchestrator.cron_next('30 1 * * *', '2021-11-05 12:00', 'America/New_York', 4);
-- a job every hour keeps running through both: no gap, no double run
SELECT * FROM orchestrator.cron_next('30 * * * *', '2021-03-14 00:00', 'America/New_York', 4);
SELECT * FROM orchestrator.cron_next('30 * * * *', '2021-11-07 00:00', 'America/New_York', 5);
-- every 15 minutes across the fall-back hour: 8 runs in the two 01:xx hours
SELECT count(*) FROM orchestrator.cron_next('*/15 * * * *', '2021-11-07 00:59', 'America/New_York', 100) t
 WHERE t < '2021-11-07 02:00 EST';
-- a schedule evaluated step by step from each result gives the same times
SELECT array_agg(t ORDER BY t) = (SELECT array_agg(t ORDER BY t)
		FROM orchestrator.cron_next('30 1,2 * * *', '2021-03-01', 'America/New_York', 300) t)
  FROM (WITH RECURSIVE s(t, i) AS (
		  SELECT orchestrator.cron_next('30 1,2 * * *', '2021-03-01', 'America/New_York'), 1
		  UNION ALL
		  SELECT orchestrator.cron_next('30 1,2 * * *', s.t, 'America/New_York'), i + 1
			FROM s WHERE i < 300)
		SELECT t FROM s) x;
SET TimeZone = 'UTC';
-- Lord Howe Island moves its clocks by 30 minutes: back from 02:00 to 01:30
-- on 2021-04-04 (01:45 once, at its first occurrence, 14:45 UTC), forward
-- from 02:00 to 02:30 on 2021-10-03 (02:15 does not exist: 02:45, 15:45 UTC)
SELECT * FROM orchestrator.cron_next('45 1 * * *', '2021-04-02 12:00', 'Australia/Lord_Howe', 3);
SELECT * FROM orchestrator.cron_next('15 2 * * *', '2021-10-01 12:00', 'Australia/Lord_Howe', 3);

-- errors name the field at fault
SELECT * FROM orchestrator.cron_next('60 * * * *', now());
SELECT * FROM orchestrator.cron_next('0 24 * * *', now());
SELECT * FROM orchestrator.cron_next('0 0 0 * *', now());
SELECT * FROM orchestrator.cron_next('0 0 * 13 *', now());
SELECT * FROM orchestrator.cron_next('0 0 * * 8', now());
SELECT * FROM orchestrator.cron_next('0 0 * foo *', now());
SELECT * FROM orchestrator.cron_next('0 0 * * mon-', now());
SELECT * FROM orchestrator.cron_next('0 5-1 * * *', now());
SELECT * FROM orchestrator.cron_next('*/0 * * * *', now());
SELECT * FROM orchestrator.cron_next('1,,2 * * * *', now());
SELECT * FROM orchestrator.cron_next('0 0 * *', now());
SELECT * FROM orchestrator.cron_next('0 0 * * * *', now());
SELECT * FROM orchestrator.cron_next('', now());
SELECT * FROM orchestrator.cron_next('@fortnightly', now());
SELECT * FROM orchestrator.cron_next('0 0 30 2 *', now());
SELECT * FROM orchestrator.cron_next('0 0 * * *', now(), 'Mars/Olympus_Mons');
SELECT * FROM orchestrator.cron_next('0 0 * * *', now(), 'UTC', -1);
SELECT * FROM orchestrator.cron_next('0 0 * * *', 'infinity', 'UTC');
