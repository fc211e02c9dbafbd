/*-------------------------------------------------------------------------
 *
 * stream.h
 *	  The data path: sources, filters and sinks moving bounded buffers.
 *
 * A stream is pulled: a sink asks the last stage for bytes, a filter asks
 * its input, and a source fetches more only when asked, so memory stays
 * bounded whatever the size of the data (back-pressure).  A stage raises
 * errors with ereport from its read function, never from inside a libcurl
 * or zlib callback, and frees what it holds (curl handles, zlib state) from
 * a memory context callback, so an error or a cancel cleans up by itself.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ORCHESTRATOR_STREAM_H
#define ORCHESTRATOR_STREAM_H

#include "utils/jsonb.h"

#include "template.h"

typedef struct Stream Stream;

/* Reads up to len bytes into buf; 0 at the end of the data. */
typedef size_t (*stream_read_fn) (Stream *stream, char *buf, size_t len);

struct Stream
{
	const char *name;			/* for messages: "http", "gunzip", ... */
	stream_read_fn read;
	Stream	   *input;			/* the stage read from, for filters */
	void	   *state;
	uint64		bytes;			/* bytes this stage has produced */

	/* lookahead (stream_peek) */
	char	   *peek_buf;
	size_t		peek_len;
	size_t		peek_pos;
};

extern size_t stream_read(Stream *stream, char *buf, size_t len);
extern size_t stream_peek(Stream *stream, const char **data, size_t want);
extern Stream *stream_new(const char *name, stream_read_fn read, Stream *input,
						  void *state);

/* the shared-memory progress counter of the running task */
extern void stream_count_input(uint64 bytes);

/* sources */
typedef struct HttpRequest
{
	const char *url;
	const char *method;			/* GET, POST, ... */
	List	   *headers;		/* "Name: value" strings */
	const char *body;			/* or NULL */
	int64		timeout_ms;		/* 0: none */
	int64		max_bytes;		/* 0: no limit */
	const char *if_none_match;	/* to revalidate a cached response, or NULL */
	const char *if_modified_since;
	bool		any_status;		/* a final status other than 2xx is an answer
								 * (in the result), not an error: sensors */
} HttpRequest;

typedef struct HttpResult
{
	long		status;
	char	   *content_type;
	char	   *effective_url;
	char	   *etag;			/* the response's validators, or NULL */
	char	   *last_modified;
	bool		not_modified;	/* 304 to a conditional request: no body */
} HttpResult;

extern Stream *http_source(const HttpRequest *request, HttpResult *result);
extern Stream *artifact_source(Oid loid);

/* filters */
extern Stream *gunzip_filter(Stream *input);
extern Stream *maybe_gunzip(Stream *input, const char *compression);

/* sinks */
typedef struct ArtifactInfo
{
	Oid			loid;
	int64		size;
	char		sha256[65];
} ArtifactInfo;

extern void artifact_sink(Stream *input, ArtifactInfo *info);
extern void artifact_done(void);

typedef struct CopyTarget
{
	List	   *names;			/* the rendered, qualified table name */
	const char *format;
	bool		header;
	const char *delimiter;
	const char *null_string;
	const char *mode;			/* append, replace or partition */
	bool		create;			/* create_table */
	const char *columns;		/* for create, or NULL to infer */

	/* on_error => 'skip': bad rows go to orchestrator.rejects */
	bool		skip;
	int64		reject_limit;	/* -1: no limit */

	/* mode => 'partition': the run's data interval, as a partition */
	const char *partition_by;
	TimestampTz interval_start;
	TimestampTz interval_end;
	const char *timezone;		/* the DAG's, for timestamp and date keys */

	/* whose rejects they are */
	int64		run_id;
	const char *task_id;
	int			map_index;
	int			try_number;

	/* out */
	uint64		rejected;		/* rows set aside */
	char	   *loaded;			/* what was loaded, for the task's log */
	char	   *asset;			/* the target table, schema-qualified: an asset */
} CopyTarget;

extern uint64 copy_sink(Stream *input, CopyTarget *target);

#endif							/* ORCHESTRATOR_STREAM_H */
