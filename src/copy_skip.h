/*-------------------------------------------------------------------------
 *
 * copy_skip.h
 *	  COPY FROM that sets bad rows aside in orchestrator.rejects.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ORCHESTRATOR_COPY_SKIP_H
#define ORCHESTRATOR_COPY_SKIP_H

#include "commands/copy.h"

typedef struct CopySkip
{
	int64		reject_limit;	/* -1: no limit */

	/* whose rejects they are */
	int64		run_id;
	const char *task_id;
	int			map_index;
	int			try_number;

	/* mode => 'partition': the column whose value must be in the interval */
	AttrNumber	interval_attnum;	/* 0: none */
	const char *interval_column;
	Oid			interval_type;	/* timestamp, timestamptz or date */
	int64		interval_lower; /* [lower, upper) in the type's units */
	int64		interval_upper;
	const char *interval_text;	/* "[lower, upper)", for messages */

	/* out: how many rows were set aside */
	uint64		rejected;
} CopySkip;

extern uint64 copy_from_skipping(CopyFromState cstate, CopySkip *opts);
extern Oid	rejects_owner(void);

#endif							/* ORCHESTRATOR_COPY_SKIP_H */
