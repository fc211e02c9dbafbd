/*-------------------------------------------------------------------------
 *
 * op_data.c
 *	  The data operators, each a composition of stream stages:
 *
 *	  http_fetch:			http -> artifact
 *	  gunzip:				artifact -> gunzip -> artifact
 *	  copy_into(input =>):	artifact -> [gunzip] -> copy
 *	  copy_into(url =>):	http -> [gunzip] -> copy, with no intermediate
 *
 * They run as the DAG's owner, inside the worker's transaction; what they
 * produce (an artifact, rows loaded) is recorded by the worker with the
 * task's success, in the same transaction.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "copy_skip.h"
#include "orchestrator.h"
#include "stream.h"
#include "task.h"
#include "tasklog.h"

static char *
spec_string(TaskRun *task, const char *key, bool render)
{
	JsonbValue *v = jsonb_get_key(task->spec, key);
	char	   *s;

	if (v == NULL || v->type != jbvString)
		return NULL;
	s = pnstrdup(v->val.string.val, v->val.string.len);
	if (!render)
		return s;
	return template_render(s, psprintf("the %s of task \"%s\"", key, task->task_id),
						   &task->ctx);
}

static bool
spec_bool(TaskRun *task, const char *key, bool dflt)
{
	JsonbValue *v = jsonb_get_key(task->spec, key);

	return (v != NULL && v->type == jbvBool) ? v->val.boolean : dflt;
}

int64
op_interval_ms(const char *text)
{
	Interval   *iv = DatumGetIntervalP(DirectFunctionCall3(interval_in,
														   CStringGetDatum(text),
														   ObjectIdGetDatum(InvalidOid),
														   Int32GetDatum(-1)));

	return (iv->time + (iv->day + (int64) iv->month * DAYS_PER_MONTH) * USECS_PER_DAY) / 1000;
}

/* The request a spec describes, its templates rendered. */
void
op_http_request(TaskRun *task, HttpRequest *out)
{
	HttpRequest req;
	JsonbValue *v;
	char	   *timeout;

	memset(&req, 0, sizeof(req));
	req.url = spec_string(task, "url", true);
	req.method = spec_string(task, "method", false);
	if (req.method == NULL)
		req.method = "GET";
	req.body = spec_string(task, "body", true);
	timeout = spec_string(task, "timeout", false);
	req.timeout_ms = timeout ? op_interval_ms(timeout) : 10 * 60 * 1000;
	v = jsonb_get_key(task->spec, "max_bytes");
	if (v != NULL && v->type == jbvNumeric)
		req.max_bytes = DatumGetInt64(DirectFunctionCall1(numeric_int8,
														  NumericGetDatum(v->val.numeric)));
	v = jsonb_get_key(task->spec, "headers");
	if (v != NULL && v->type == jbvBinary)
	{
		JsonbIterator *it = JsonbIteratorInit(v->val.binary.data);
		JsonbValue	hv;
		JsonbIteratorToken tok;
		char	   *name = NULL;

		while ((tok = JsonbIteratorNext(&it, &hv, true)) != WJB_DONE)
		{
			if (tok == WJB_KEY)
				name = pnstrdup(hv.val.string.val, hv.val.string.len);
			else if (tok == WJB_VALUE && hv.type == jbvString)
			{
				char	   *value = template_render(pnstrdup(hv.val.string.val, hv.val.string.len),
													psprintf("header \"%s\" of task \"%s\"", name, task->task_id),
													&task->ctx);

				if (strpbrk(value, "\r\n") != NULL)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("header \"%s\" of task \"%s\" renders with a line break", name, task->task_id)));
				req.headers = lappend(req.headers, psprintf("%s: %s", name, value));
			}
		}
	}
	*out = req;
}

static Stream *
http_from_spec(TaskRun *task, HttpResult *result)
{
	HttpRequest req;

	op_http_request(task, &req);
	task->url = pstrdup(req.url);
	return http_source(&req, result);
}

/*
 * What a task's output is made from, for caching: the rendered request of
 * an http_fetch, the input's checksum for a gunzip.
 */
char *
op_cache_key(TaskRun *task)
{
	const char *op = operator_name(task->spec);
	StringInfoData key;

	initStringInfo(&key);
	if (strcmp(op, "http_fetch") == 0)
	{
		HttpRequest req;
		ListCell   *lc;

		op_http_request(task, &req);
		appendStringInfo(&key, "http_fetch %s %s", req.method, req.url);
		foreach(lc, req.headers)
			appendStringInfo(&key, "\n%s", (char *) lfirst(lc));
		if (req.body)
			appendStringInfo(&key, "\n\n%s", req.body);
	}
	else
		appendStringInfo(&key, "gunzip %s", task->input_sha256 ? task->input_sha256 : "");
	return key.data;
}

/* The output is an earlier artifact of the same key. */
void
op_use_cache_entry(TaskRun *task, const char *why)
{
	task->cached = true;
	task->has_artifact = true;
	task->artifact = task->entry;
	task->content_type = task->entry_content_type;
	task->url = task->entry_url;
	task->http_status = task->entry_status;
	task->etag = task->entry_etag;
	task->last_modified = task->entry_last_modified;
	task_log("%s: the output of an earlier run, " INT64_FORMAT " bytes, sha256 %s",
			 why, task->artifact.size, task->artifact.sha256);
}

static double
seconds_since(TimestampTz start)
{
	return (GetCurrentTimestamp() - start) / 1000000.0;
}

void
op_http_fetch_run(TaskRun *task)
{
	HttpResult	result;
	HttpRequest req;
	TimestampTz start = GetCurrentTimestamp();
	Stream	   *body;
	const char *head;

	op_http_request(task, &req);
	/* revalidate an expired cache entry, where the server gave validators */
	if (task->has_entry)
	{
		req.if_none_match = task->entry_etag;
		req.if_modified_since = task->entry_last_modified;
	}
	task->url = pstrdup(req.url);
	body = http_source(&req, &result);
	task_log("fetching %s%s", task->url,
			 req.if_none_match || req.if_modified_since ? " (revalidating)" : "");
	(void) stream_peek(body, &head, 1);
	if (result.not_modified)
	{
		op_use_cache_entry(task, "not modified (HTTP 304)");
		task->artifact_created_at = 0;	/* fresh again */
		return;
	}
	artifact_sink(body, &task->artifact);
	/* the validators are known once the transfer has ended */
	task->etag = result.etag;
	task->last_modified = result.last_modified;
	task->has_artifact = true;
	task->http_status = result.status;
	task->content_type = result.content_type;
	task_log("HTTP %ld, %s, " INT64_FORMAT " bytes in %.3f s, sha256 %s",
			 result.status, result.content_type ? result.content_type : "no content type",
			 task->artifact.size, seconds_since(start), task->artifact.sha256);
}

void
op_gunzip_run(TaskRun *task)
{
	TimestampTz start = GetCurrentTimestamp();
	Stream	   *source = artifact_source(task->input_loid);

	artifact_sink(gunzip_filter(source), &task->artifact);
	task->has_artifact = true;
	task_log("gunzip: " UINT64_FORMAT " bytes in, " INT64_FORMAT " bytes out in %.3f s",
			 source->bytes, task->artifact.size, seconds_since(start));
}

/*
 * The DAG's time zone, read as the catalog's owner (the task's owner reads
 * its DAG too, but its search_path and rights are its own).
 */
static char *
dag_timezone(TaskRun *task)
{
	Oid			save_userid;
	int			save_sec_context;
	char	   *tz;
	MemoryContext cxt = CurrentMemoryContext;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(rejects_owner(),
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	SPI_connect();
	run_query("SELECT timezone FROM orchestrator.dag WHERE dag_id OPERATOR(pg_catalog.=) $1",
			  1, (Oid[]) {TEXTOID}, (Datum[]) {CStringGetTextDatum(task->dag_id)},
			  NULL, SPI_OK_SELECT);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("DAG \"%s\" does not exist", task->dag_id)));
	tz = MemoryContextStrdup(cxt, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec_context);
	return tz;
}

void
op_copy_into_run(TaskRun *task)
{
	CopyTarget target;
	Stream	   *source;
	HttpResult	result;
	char	   *name;
	Stream	   *input;
	char	   *on_error;
	JsonbValue *v;
	TimestampTz start = GetCurrentTimestamp();

	memset(&target, 0, sizeof(target));
	name = spec_string(task, "target", false);
	target.names = template_render_name(name,
										psprintf("the target of task \"%s\"", task->task_id),
										&task->ctx);
	target.format = spec_string(task, "format", false);
	if (target.format == NULL)
		target.format = "csv";
	target.header = spec_bool(task, "header", true);
	target.delimiter = spec_string(task, "delimiter", false);
	target.null_string = spec_string(task, "null_string", false);
	target.mode = spec_string(task, "mode", false);
	if (target.mode == NULL)
		target.mode = "append";
	/* "create" is create_table's name in specs written under 0.1 */
	target.create = spec_bool(task, "create_table", spec_bool(task, "create", false));
	target.columns = spec_string(task, "columns", false);

	on_error = spec_string(task, "on_error", false);
	target.skip = (on_error != NULL && strcmp(on_error, "skip") == 0);
	target.reject_limit = -1;
	v = jsonb_get_key(task->spec, "reject_limit");
	if (v != NULL && v->type == jbvNumeric)
		target.reject_limit = DatumGetInt64(DirectFunctionCall1(numeric_int8,
																NumericGetDatum(v->val.numeric)));
	target.run_id = task->run_id;
	target.task_id = task->task_id;
	target.map_index = task->map_index;
	target.try_number = task->try_number;
	if (strcmp(target.mode, "partition") == 0)
	{
		target.partition_by = spec_string(task, "partition_by", false);
		target.interval_start = task->ctx.data_interval_start;
		target.interval_end = task->ctx.data_interval_end;
		target.timezone = dag_timezone(task);
	}

	if (OidIsValid(task->input_loid))
		input = artifact_source(task->input_loid);
	else
	{
		input = http_from_spec(task, &result);
		task_log("streaming %s", task->url);
	}
	source = maybe_gunzip(input, spec_string(task, "compression", false));

	task->rows_loaded = copy_sink(source, &target);
	task->has_rows = true;
	task->asset_table = target.asset;
	if (target.skip)
		task_log("loaded " UINT64_FORMAT " rows into %s, " UINT64_FORMAT " bad rows set aside in orchestrator.rejects (" UINT64_FORMAT " bytes read%s) in %.3f s",
				 task->rows_loaded, target.loaded, target.rejected, input->bytes,
				 source != input ? ", gunzipped" : "", seconds_since(start));
	else
		task_log("loaded " UINT64_FORMAT " rows into %s (" UINT64_FORMAT " bytes read%s) in %.3f s",
				 task->rows_loaded, target.loaded, input->bytes,
				 source != input ? ", gunzipped" : "", seconds_since(start));
}

/*
 * http_fetch as a callback (a webhook): the request is made and the
 * response read, but not kept.
 */
void
op_webhook_run(TaskRun *task)
{
	HttpResult	result;
	Stream	   *body = http_from_spec(task, &result);
	char		buf[8192];
	uint64		total = 0;
	size_t		n;

	while ((n = stream_read(body, buf, sizeof(buf))) > 0)
		total += n;
	task_log("called %s: HTTP %ld, " UINT64_FORMAT " bytes", task->url, result.status, total);
}
