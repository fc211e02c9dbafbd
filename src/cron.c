/*-------------------------------------------------------------------------
 *
 * cron.c
 *	  Five-field cron schedules, evaluated in an IANA time zone.
 *
 * A schedule is "minute hour day-of-month month day-of-week", each field a
 * comma-separated list of "*", values, ranges "a-b" and steps "x/n"; months
 * and weekdays also by their English three-letter names.  As in Vixie cron,
 * when both day fields are restricted (neither starts with '*'), a day
 * matches if either matches; otherwise both must.
 *
 * Times are wall-clock times in the DAG's time zone.  Daylight-saving time:
 *
 * - A wall time that does not exist (the hour skipped when clocks go
 *	 forward) fires at the same distance past the transition, i.e. shifted
 *	 forward by the length of the gap: a job at 02:30 on a day when clocks
 *	 jump from 02:00 to 03:00 fires at 03:30.  It fires once.
 * - A wall time that occurs twice (the hour repeated when clocks go back)
 *	 fires once, at its first occurrence, unless the schedule fires every
 *	 hour (hour field "*"), in which case it fires at both, so that an
 *	 hourly or more frequent job keeps running through the repeated hour.
 *	 This is Vixie cron's rule for "fixed-time" and "wildcard" jobs.
 *
 * The search works on "wall seconds": seconds since 1970-01-01 00:00 of the
 * local wall clock, as if it were UTC.  Candidate wall times come from the
 * fields; each is then mapped to the real instant(s) it names.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "port/pg_bitutils.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "cron.h"

#define SECS_PER_MINUTE_I	INT64CONST(60)
#define SECS_PER_HOUR_I		INT64CONST(3600)
#define SECS_PER_DAY_I		INT64CONST(86400)

/*
 * How far a UTC offset can move at one transition, and how far to look on
 * each side of a wall time for the offsets in effect around it.
 */
#define MAX_OFFSET_JUMP		(3 * SECS_PER_HOUR_I)
#define OFFSET_WINDOW		(2 * SECS_PER_DAY_I)
/* Every valid schedule fires within this many years (Feb 29: 8). */
#define SEARCH_YEARS		10

typedef struct CronField
{
	const char *name;
	int			min;
	int			max;
	const char *const *names;	/* names[i] is value min + i, or NULL */
} CronField;

static const char *const month_names[] = {
	"jan", "feb", "mar", "apr", "may", "jun",
	"jul", "aug", "sep", "oct", "nov", "dec", NULL
};

static const char *const weekday_names[] = {
	"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL
};

static const CronField cron_fields[5] = {
	{"minute", 0, 59, NULL},
	{"hour", 0, 23, NULL},
	{"day-of-month", 1, 31, NULL},
	{"month", 1, 12, month_names},
	/* 7 is Sunday too */
	{"day-of-week", 0, 7, weekday_names},
};

static const struct
{
	const char *name;
	const char *expansion;
}			cron_presets[] = {
	{"@hourly", "0 * * * *"},
	{"@daily", "0 0 * * *"},
	{"@midnight", "0 0 * * *"},
	{"@weekly", "0 0 * * 0"},
	{"@monthly", "0 0 1 * *"},
	{"@yearly", "0 0 1 1 *"},
	{"@annually", "0 0 1 1 *"},
};

static void cron_field_error(const char *schedule, const CronField *field,
							 const char *text, const char *reason) pg_attribute_noreturn();

static void
cron_field_error(const char *schedule, const CronField *field,
				 const char *text, const char *reason)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid cron schedule \"%s\"", schedule),
			 errdetail("In the %s field \"%s\": %s.", field->name, text, reason),
			 errhint("The %s field takes values %d-%d%s, \"*\", lists \"a,b\", ranges \"a-b\" and steps \"*/n\" or \"a-b/n\".",
					 field->name, field->min, field->max,
					 field->names == month_names ? " or jan-dec" :
					 field->names == weekday_names ? " (0 and 7 are Sunday) or sun-sat" : "")));
}

/*
 * Parses one value (a number or a name) at *p, advancing *p.
 */
static int
cron_parse_value(const char *schedule, const CronField *field,
				 const char *text, const char **p)
{
	const char *s = *p;

	if (isdigit((unsigned char) *s))
	{
		int			value = 0;

		while (isdigit((unsigned char) *s))
		{
			value = value * 10 + (*s - '0');
			if (value > 1000)
				cron_field_error(schedule, field, text, "a value is out of range");
			s++;
		}
		if (value < field->min || value > field->max)
			cron_field_error(schedule, field, text,
							 psprintf("value %d is outside %d-%d",
									  value, field->min, field->max));
		*p = s;
		return value;
	}
	if (field->names != NULL && isalpha((unsigned char) *s))
	{
		for (int i = 0; field->names[i] != NULL; i++)
		{
			if (pg_strncasecmp(s, field->names[i], 3) == 0 &&
				!isalpha((unsigned char) s[3]))
			{
				*p = s + 3;
				return field->min + i;
			}
		}
		cron_field_error(schedule, field, text, "unknown name");
	}
	if (*s == '\0')
		cron_field_error(schedule, field, text, "a value is missing");
	cron_field_error(schedule, field, text,
					 psprintf("unexpected character \"%c\"", *s));
}

/*
 * Parses one field into a bit set.  *star is set if the field starts
 * with '*'.
 */
static uint64
cron_parse_field(const char *schedule, const CronField *field,
				 const char *text, bool *star)
{
	uint64		bits = 0;
	const char *p = text;

	*star = (text[0] == '*');

	for (;;)
	{
		int			lo,
					hi,
					step = 1;
		bool		is_range = false;

		if (*p == '*')
		{
			lo = field->min;
			hi = field->max;
			is_range = true;
			p++;
		}
		else
		{
			lo = hi = cron_parse_value(schedule, field, text, &p);
			if (*p == '-')
			{
				bool		name = isalpha((unsigned char) p[1]);

				p++;
				hi = cron_parse_value(schedule, field, text, &p);
				/* "fri-sun": Sunday at the end of a range is 7 */
				if (field->names == weekday_names && name && hi == 0)
					hi = 7;
				if (hi < lo)
					cron_field_error(schedule, field, text,
									 psprintf("range %d-%d is reversed", lo, hi));
				is_range = true;
			}
		}
		if (*p == '/')
		{
			p++;
			if (!isdigit((unsigned char) *p))
				cron_field_error(schedule, field, text, "a step must be a positive number");
			step = 0;
			while (isdigit((unsigned char) *p))
			{
				step = step * 10 + (*p - '0');
				if (step > 1000)
					break;
				p++;
			}
			if (step == 0 || step > field->max)
				cron_field_error(schedule, field, text,
								 psprintf("a step must be between 1 and %d", field->max));
			/* "5/15" means "5-max/15" */
			if (!is_range)
				hi = field->max;
		}
		for (int v = lo; v <= hi; v += step)
			bits |= UINT64CONST(1) << (field->names == weekday_names && v == 7 ? 0 : v);

		if (*p == ',')
		{
			p++;
			continue;
		}
		if (*p != '\0')
			cron_field_error(schedule, field, text,
							 psprintf("unexpected character \"%c\"", *p));
		break;
	}
	return bits;
}

static int
days_in_month(int year, int month)
{
	static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	if (month == 2 && isleap(year))
		return 29;
	return mdays[month - 1];
}

void
cron_parse(const char *schedule, CronSchedule *sched)
{
	char	   *copy;
	char	   *fields[5];
	int			nfields = 0;
	char	   *p;
	const char *expanded = schedule;
	bool		star;
	bool		possible;

	memset(sched, 0, sizeof(*sched));

	while (isspace((unsigned char) *expanded))
		expanded++;
	if (*expanded == '@')
	{
		const char *end = expanded + strlen(expanded);
		int			len;

		while (end > expanded && isspace((unsigned char) end[-1]))
			end--;
		len = end - expanded;
		if (len == 5 && pg_strncasecmp(expanded, "@once", 5) == 0)
		{
			sched->once = true;
			return;
		}
		for (int i = 0; i < lengthof(cron_presets); i++)
		{
			if (len == strlen(cron_presets[i].name) &&
				pg_strncasecmp(expanded, cron_presets[i].name, len) == 0)
			{
				expanded = cron_presets[i].expansion;
				goto parse_fields;
			}
		}
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid cron schedule \"%s\"", schedule),
				 errdetail("Unknown preset \"%.*s\".", len, expanded),
				 errhint("Presets are @once, @hourly, @daily, @weekly, @monthly and @yearly.")));
	}

parse_fields:
	copy = pstrdup(expanded);
	p = copy;
	for (;;)
	{
		while (isspace((unsigned char) *p))
			*p++ = '\0';
		if (*p == '\0')
			break;
		if (nfields < 5)
			fields[nfields] = p;
		nfields++;
		while (*p != '\0' && !isspace((unsigned char) *p))
			p++;
	}
	if (nfields != 5)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid cron schedule \"%s\"", schedule),
				 errdetail("A schedule has 5 fields (minute, hour, day-of-month, month, day-of-week), not %d.",
						   nfields),
				 errhint("Use five fields such as \"30 6 * * 1-5\", a preset such as @daily, or NULL for manual runs only.")));

	sched->minutes = cron_parse_field(schedule, &cron_fields[0], fields[0], &star);
	sched->hours = (uint32) cron_parse_field(schedule, &cron_fields[1], fields[1], &star);
	sched->hour_star = (sched->hours == (UINT64CONST(1) << 24) - 1);
	sched->days = (uint32) cron_parse_field(schedule, &cron_fields[2], fields[2], &sched->dom_star);
	sched->months = (uint32) cron_parse_field(schedule, &cron_fields[3], fields[3], &star);
	sched->weekdays = (uint32) cron_parse_field(schedule, &cron_fields[4], fields[4], &sched->dow_star);
	pfree(copy);

	/*
	 * With the weekday unrestricted, the day of month alone decides: make
	 * sure some chosen month has some chosen day ("0 0 30 2 *" never fires).
	 */
	if (sched->dom_star || !sched->dow_star)
		return;
	possible = false;
	for (int month = 1; month <= 12 && !possible; month++)
	{
		if (!(sched->months & (1U << month)))
			continue;
		for (int day = 1; day <= days_in_month(2000, month); day++)
			if (sched->days & (1U << day))
				possible = true;
	}
	if (!possible)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid cron schedule \"%s\"", schedule),
				 errdetail("No chosen month has the chosen day of month, so the schedule never fires.")));
}

static inline int64
floor_div(int64 a, int64 b)
{
	return a / b - ((a % b != 0 && (a < 0) != (b < 0)) ? 1 : 0);
}

static bool
cron_day_matches(const CronSchedule *sched, int julian, int mday)
{
	bool		dom = (sched->days & (1U << mday)) != 0;
	bool		dow = (sched->weekdays & (1U << j2day(julian))) != 0;

	if (sched->dom_star || sched->dow_star)
		return dom && dow;
	return dom || dow;
}

/*
 * The first wall time strictly after "wall" (wall seconds) that the
 * schedule matches, if there is one no later than "limit".
 */
static bool
cron_next_wall(const CronSchedule *sched, int64 wall, int64 limit, int64 *result)
{
	int64		t = (floor_div(wall, SECS_PER_MINUTE_I) + 1) * SECS_PER_MINUTE_I;

	while (t <= limit)
	{
		int64		days = floor_div(t, SECS_PER_DAY_I);
		int64		secs = t - days * SECS_PER_DAY_I;
		int			julian = (int) days + UNIX_EPOCH_JDATE;
		int			year,
					month,
					mday;
		int			hour = (int) (secs / SECS_PER_HOUR_I);
		int			minute = (int) ((secs % SECS_PER_HOUR_I) / SECS_PER_MINUTE_I);

		j2date(julian, &year, &month, &mday);
		if (!(sched->months & (1U << month)))
		{
			/* first minute of the next month */
			if (++month > 12)
			{
				month = 1;
				year++;
			}
			t = (date2j(year, month, 1) - UNIX_EPOCH_JDATE) * SECS_PER_DAY_I;
		}
		else if (!cron_day_matches(sched, julian, mday))
			t = (days + 1) * SECS_PER_DAY_I;
		else if (!(sched->hours & (1U << hour)))
		{
			/* the next hour of the set that day, or the next day */
			uint32		later = sched->hours & ~((1U << hour) - 1);

			if (later == 0)
				t = (days + 1) * SECS_PER_DAY_I;
			else
				t = days * SECS_PER_DAY_I + pg_rightmost_one_pos32(later) * SECS_PER_HOUR_I;
		}
		else if (!(sched->minutes & (UINT64CONST(1) << minute)))
		{
			/* the next minute of the set that hour, or the next hour */
			uint64		later = sched->minutes & ~((UINT64CONST(1) << minute) - 1);

			if (later == 0)
				t = days * SECS_PER_DAY_I + (hour + 1) * SECS_PER_HOUR_I;
			else
				t = days * SECS_PER_DAY_I + hour * SECS_PER_HOUR_I +
					pg_rightmost_one_pos64(later) * SECS_PER_MINUTE_I;
		}
		else
		{
			*result = t;
			return true;
		}
	}
	return false;
}

static int64
utc_offset_at(int64 instant, pg_tz *tz)
{
	pg_time_t	t = (pg_time_t) instant;
	struct pg_tm *tm = pg_localtime(&t, tz);

	return tm != NULL ? tm->tm_gmtoff : 0;
}

/*
 * The instants (Unix seconds) that a wall time names in "tz", in order:
 * one, or two when the wall time occurs twice and "both" is set.
 */
static int
cron_wall_to_instants(int64 wall, pg_tz *tz, bool both, int64 instants[2])
{
	int64		offset_before = utc_offset_at(wall - OFFSET_WINDOW, tz);
	int64		offsets[3];
	int			n = 0;

	offsets[0] = offset_before;
	offsets[1] = utc_offset_at(wall + OFFSET_WINDOW, tz);
	offsets[2] = utc_offset_at(wall - utc_offset_at(wall, tz), tz);

	for (int i = 0; i < 3; i++)
	{
		int64		instant = wall - offsets[i];
		bool		seen = false;

		if (utc_offset_at(instant, tz) != offsets[i])
			continue;
		for (int j = 0; j < n; j++)
			seen |= (instants[j] == instant);
		if (seen)
			continue;
		if (n == 2)
			break;
		instants[n++] = instant;
	}
	if (n == 0)
	{
		/* in a gap: shift forward by its length */
		instants[0] = wall - offset_before;
		return 1;
	}
	if (n == 2 && instants[1] < instants[0])
	{
		int64		swap = instants[0];

		instants[0] = instants[1];
		instants[1] = swap;
	}
	return both ? n : 1;
}

bool
cron_next_time(const CronSchedule *sched, pg_tz *tz, TimestampTz after,
			   TimestampTz *next)
{
	int64		after_secs;
	int64		wall;
	int64		limit;
	int64		best_wall = 0;
	bool		found = false;

	if (sched->once)
		return false;
	if (TIMESTAMP_NOT_FINITE(after))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("cannot compute a schedule time after an infinite timestamp")));

	after_secs = floor_div(after, USECS_PER_SEC) +
		(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY_I;
	wall = after_secs + utc_offset_at(after_secs, tz);
	limit = wall + SEARCH_YEARS * 366 * SECS_PER_DAY_I;

	/*
	 * Around a transition the wall clock is not monotonic, so start a little
	 * before "after"'s wall time and keep the earliest instant after it.
	 */
	wall -= MAX_OFFSET_JUMP;
	while (cron_next_wall(sched, wall, limit, &wall))
	{
		int64		instants[2];
		int			n;

		if (found && wall > best_wall + MAX_OFFSET_JUMP)
			break;
		n = cron_wall_to_instants(wall, tz, sched->hour_star, instants);
		for (int i = 0; i < n; i++)
		{
			TimestampTz ts = time_t_to_timestamptz((pg_time_t) instants[i]);

			if (ts > after && (!found || ts < *next))
			{
				*next = ts;
				best_wall = wall;
				found = true;
			}
		}
	}
	return found;
}

pg_tz *
orch_lookup_timezone(const char *name)
{
	pg_tz	   *tz = pg_tzset(name);

	if (tz == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("time zone \"%s\" not recognized", name),
				 errhint("Use an IANA time zone name such as \"UTC\" or \"America/New_York\"; pg_timezone_names lists them.")));
	return tz;
}

typedef struct CronNextState
{
	CronSchedule sched;
	pg_tz	   *tz;
	TimestampTz last;
} CronNextState;

PG_FUNCTION_INFO_V1(orch_cron_next);

/*
 * cron_next(schedule text, after timestamptz, timezone text, n int)
 *		RETURNS SETOF timestamptz
 */
Datum
orch_cron_next(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	CronNextState *state;
	TimestampTz next;

	if (SRF_IS_FIRSTCALL())
	{
		MemoryContext oldcontext;
		int32		n;

		funcctx = SRF_FIRSTCALL_INIT();
		if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
			SRF_RETURN_DONE(funcctx);
		n = PG_GETARG_INT32(3);
		if (n < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("n must not be negative")));

		oldcontext = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		state = palloc(sizeof(CronNextState));
		cron_parse(text_to_cstring(PG_GETARG_TEXT_PP(0)), &state->sched);
		state->tz = orch_lookup_timezone(text_to_cstring(PG_GETARG_TEXT_PP(2)));
		state->last = PG_GETARG_TIMESTAMPTZ(1);
		funcctx->max_calls = n;
		funcctx->user_fctx = state;
		MemoryContextSwitchTo(oldcontext);
	}

	funcctx = SRF_PERCALL_SETUP();
	state = funcctx->user_fctx;
	if (funcctx->call_cntr < funcctx->max_calls &&
		cron_next_time(&state->sched, state->tz, state->last, &next))
	{
		state->last = next;
		SRF_RETURN_NEXT(funcctx, TimestampTzGetDatum(next));
	}
	SRF_RETURN_DONE(funcctx);
}
