/*-------------------------------------------------------------------------
 *
 * cron.h
 *	  Five-field cron schedules evaluated in an IANA time zone.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ORCHESTRATOR_CRON_H
#define ORCHESTRATOR_CRON_H

#include "datatype/timestamp.h"
#include "pgtime.h"

typedef struct CronSchedule
{
	uint64		minutes;		/* bit n: minute n, 0..59 */
	uint32		hours;			/* bit n: hour n, 0..23 */
	uint32		days;			/* bit n: day of month n, 1..31 */
	uint32		months;			/* bit n: month n, 1..12 */
	uint32		weekdays;		/* bit n: weekday n, 0 (Sunday)..6 */
	bool		dom_star;		/* day-of-month field starts with '*' */
	bool		dow_star;		/* day-of-week field starts with '*' */
	bool		hour_star;		/* every hour matches (the DST wildcard rule) */
	bool		once;			/* @once: a single run, no recurrence */
} CronSchedule;

/* Parses a schedule; raises ERROR naming the bad field. */
extern void cron_parse(const char *schedule, CronSchedule *sched);

/*
 * The first time strictly after "after" at which the schedule fires in time
 * zone "tz".  Returns false if there is none (an @once schedule, or none
 * within the next ten years).
 */
extern bool cron_next_time(const CronSchedule *sched, pg_tz *tz,
						   TimestampTz after, TimestampTz *next);

/* Looks up an IANA time zone name; raises ERROR if it is unknown. */
extern pg_tz *orch_lookup_timezone(const char *name);

#endif							/* ORCHESTRATOR_CRON_H */
