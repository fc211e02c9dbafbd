/*-------------------------------------------------------------------------
 *
 * tasklog.c
 *	  Task logs: what a try says, kept with its outcome.
 *
 * While a task runs, the worker keeps the INFO, NOTICE and WARNING
 * messages its SQL raises (through emit_log_hook; in a background worker
 * nothing would output them otherwise, so log_min_messages is lowered for
 * the task, and the hook keeps INFO and NOTICE out of the server log), and
 * the operator's own lines (URL, status, bytes, rows, durations).  They are
 * written with the outcome: in the task's own transaction on success, with
 * the error on failure.  At most TASK_LOG_MAX_LINES lines of at most
 * TASK_LOG_MAX_BYTES bytes are kept per try.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/elog.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "orchestrator.h"
#include "tasklog.h"

#define TASK_LOG_MAX_LINES	1000
#define TASK_LOG_MAX_BYTES	8192

typedef struct LogLine
{
	TimestampTz at;
	const char *level;
	char	   *message;
} LogLine;

static MemoryContext log_cxt = NULL;
static LogLine *lines = NULL;
static int	nlines = 0;
static int	dropped = 0;
static bool capturing = false;
static emit_log_hook_type prev_emit_log_hook = NULL;

static void
keep_line(const char *level, const char *message)
{
	char	   *copy;
	size_t		len;

	if (nlines >= TASK_LOG_MAX_LINES)
	{
		dropped++;
		return;
	}
	len = pg_mbcliplen(message, strlen(message), TASK_LOG_MAX_BYTES);
	/* the hook runs inside error reporting: no error of its own */
	copy = MemoryContextAllocExtended(log_cxt, len + 1, MCXT_ALLOC_NO_OOM);
	if (copy == NULL)
	{
		dropped++;
		return;
	}
	memcpy(copy, message, len);
	copy[len] = '\0';
	lines[nlines].at = GetCurrentTimestamp();
	lines[nlines].level = level;
	lines[nlines].message = copy;
	nlines++;
}

static void
task_log_hook(ErrorData *edata)
{
	if (capturing && edata->message != NULL &&
		(edata->elevel == INFO || edata->elevel == NOTICE || edata->elevel == WARNING))
	{
		keep_line(edata->elevel == INFO ? "INFO" :
				  edata->elevel == NOTICE ? "NOTICE" : "WARNING",
				  edata->message);
		/* the task's chatter stays in its log; warnings go to the server's too */
		if (edata->elevel != WARNING)
			edata->output_to_server = false;
	}
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/* Starts keeping a try's lines; call in the task's transaction, as superuser. */
void
task_log_begin(void)
{
	if (log_cxt == NULL)
	{
		log_cxt = AllocSetContextCreate(TopMemoryContext, "orchestrator task log",
										ALLOCSET_DEFAULT_SIZES);
		prev_emit_log_hook = emit_log_hook;
		emit_log_hook = task_log_hook;
	}
	MemoryContextReset(log_cxt);
	lines = MemoryContextAlloc(log_cxt, sizeof(LogLine) * TASK_LOG_MAX_LINES);
	nlines = 0;
	dropped = 0;
	/* so that INFO and NOTICE reach the hook, for this transaction only */
	set_config_option("log_min_messages", "info", PGC_SUSET, PGC_S_SESSION,
					  GUC_ACTION_LOCAL, true, 0, false);
	capturing = true;
}

/* Stops keeping lines (before the outcome is recorded). */
void
task_log_end(void)
{
	capturing = false;
}

/* An operator's own line. */
void
task_log(const char *fmt,...)
{
	char		buf[TASK_LOG_MAX_BYTES];
	va_list		args;

	if (!capturing)
		return;
	va_start(args, fmt);
	vsnprintf(buf, sizeof(buf), fmt, args);
	va_end(args);
	keep_line("INFO", buf);
}

/*
 * Writes the kept lines of the try; in a transaction with SPI, as the
 * catalog's owner.  Nothing is written for an instance that is gone.
 */
void
task_log_write(int64 run_id, const char *task_id, int map_index, int try_number)
{
	Datum	   *at;
	Datum	   *level;
	Datum	   *message;
	int			n = nlines + (dropped > 0 ? 1 : 0);
	Oid			types[7] = {INT8OID, TEXTOID, INT4OID, TIMESTAMPTZARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT4OID};
	Datum		values[7];

	if (n == 0)
		return;
	at = palloc(sizeof(Datum) * n);
	level = palloc(sizeof(Datum) * n);
	message = palloc(sizeof(Datum) * n);
	for (int i = 0; i < nlines; i++)
	{
		at[i] = TimestampTzGetDatum(lines[i].at);
		level[i] = CStringGetTextDatum(lines[i].level);
		message[i] = CStringGetTextDatum(lines[i].message);
	}
	if (dropped > 0)
	{
		at[nlines] = TimestampTzGetDatum(GetCurrentTimestamp());
		level[nlines] = CStringGetTextDatum("INFO");
		message[nlines] = CStringGetTextDatum(psprintf("(%d more lines were not kept: at most %d a try)",
													   dropped, TASK_LOG_MAX_LINES));
	}
	values[0] = Int64GetDatum(run_id);
	values[1] = CStringGetTextDatum(task_id);
	values[2] = Int32GetDatum(try_number);
	values[3] = PointerGetDatum(construct_array(at, n, TIMESTAMPTZOID, sizeof(TimestampTz), true, TYPALIGN_DOUBLE));
	values[4] = PointerGetDatum(construct_array(level, n, TEXTOID, -1, false, TYPALIGN_INT));
	values[5] = PointerGetDatum(construct_array(message, n, TEXTOID, -1, false, TYPALIGN_INT));
	values[6] = Int32GetDatum(map_index);
	run_query("INSERT INTO orchestrator.log (run_id, task_id, map_index, try_number, logged_at, level, message) "
			  "SELECT $1, $2, $7, $3, l.at, l.level, l.message "
			  "FROM unnest($4, $5, $6) WITH ORDINALITY AS l(at, level, message, n) "
			  "WHERE EXISTS (SELECT 1 FROM orchestrator.task_instance "
			  "              WHERE run_id = $1 AND task_id = $2 AND map_index = $7) "
			  "ORDER BY l.n",
			  7, types, values, NULL, SPI_OK_INSERT);
	nlines = 0;
	dropped = 0;
}
