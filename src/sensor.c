/*-------------------------------------------------------------------------
 *
 * sensor.c
 *	  The sensors: sql_sensor and http_sensor, each a poke.
 *
 * A sensor's try is a series of pokes, each a short worker visit: the
 * worker claims the instance, runs one poke as the DAG's owner (this
 * file), and records the outcome (worker.c, state.c).  A true poke is the
 * try's success; a false one leaves the instance up_for_reschedule until
 * its next poke, poke_interval later, holding no worker and keeping its
 * try number; at its timeout, counted from the try's first poke, the try
 * fails for good (a sensor's timeout is not retried, as in Airflow), or
 * with soft_fail the instance is skipped.  An error in a poke (a query
 * that fails, a URL that is not allowed, a server that cannot be reached)
 * is a failed try like any task's, retried as its retries say.
 *
 *	  sql_sensor:	its (templated) query, run as the owner in the poke's
 *					transaction, like a sql task: true when the first column
 *					of its first row is true (no row, or NULL: not yet)
 *	  http_sensor:	a request (HEAD by default) under http_fetch's rules
 *					(http and https only, orchestrator.http_allowed_hosts,
 *					every redirect checked, at most 10): true on a 2xx
 *					answer, not yet on any other status; each poke's request
 *					times out after a minute
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "orchestrator.h"
#include "stream.h"
#include "task.h"
#include "tasklog.h"

/* the longest a poke's request may take */
#define SENSOR_REQUEST_TIMEOUT_MS	(60 * 1000)

static void
sql_poke(TaskRun *task)
{
	JsonbValue *query = jsonb_get_key(task->spec, "query");
	char	   *sql;
	int			rc;
	bool		isnull;
	Datum		value;

	sql = template_render(pnstrdup(query->val.string.val, query->val.string.len),
						  psprintf("the query of task \"%s\"", task->task_id),
						  &task->ctx);
	rc = SPI_execute(sql, false, 1);
	if (rc < 0)
		ereport(ERROR,
				(errmsg("the query of sensor \"%s\" failed: %s",
						task->task_id, SPI_result_code_string(rc))));
	if (SPI_tuptable == NULL || SPI_tuptable->tupdesc->natts < 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("the query of sensor \"%s\" returns no column", task->task_id),
				 errhint("A sql_sensor's query returns a boolean, such as SELECT count(*) > 0 FROM t.")));
	if (SPI_gettypeid(SPI_tuptable->tupdesc, 1) != BOOLOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("the query of sensor \"%s\" returns %s, not boolean", task->task_id,
						format_type_be(SPI_gettypeid(SPI_tuptable->tupdesc, 1))),
				 errhint("A sql_sensor's query returns a boolean, such as SELECT count(*) > 0 FROM t.")));
	if (SPI_processed == 0)
	{
		task_log("poke: no row, not yet");
		return;
	}
	value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	task->poke_ok = !isnull && DatumGetBool(value);
	task_log("poke: %s", isnull ? "null, not yet" : task->poke_ok ? "true" : "false, not yet");
}

static void
http_poke(TaskRun *task)
{
	HttpRequest req;
	HttpResult	result;
	Stream	   *body;
	char		buf[8192];

	op_http_request(task, &req);
	/* the spec's timeout is the sensor's: each request has its own */
	req.timeout_ms = SENSOR_REQUEST_TIMEOUT_MS;
	req.body = NULL;
	req.max_bytes = 0;
	req.any_status = true;
	task->url = pstrdup(req.url);
	body = http_source(&req, &result);
	/* a body comes only with a 2xx answer: the rest of it need not be read */
	if (stream_read(body, buf, sizeof(buf)) > 0)
	{
		task->poke_ok = true;
		task_log("poke: %s %s: a 2xx answer", req.method, task->url);
		return;
	}
	task->poke_ok = (result.status >= 200 && result.status < 300);
	task_log("poke: %s %s: HTTP %ld%s", req.method, task->url, result.status,
			 task->poke_ok ? "" : ", not yet");
}

/*
 * One poke, as the owner: task->poke_ok says whether the condition holds.
 */
void
op_sensor_poke(TaskRun *task)
{
	if (strcmp(operator_name(task->spec), "sql_sensor") == 0)
		sql_poke(task);
	else
		http_poke(task);
}
