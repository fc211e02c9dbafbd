/*-------------------------------------------------------------------------
 *
 * http.c
 *	  The http source: a response body, streamed with libcurl.
 *
 * The transfer runs on libcurl's multi interface, driven from the stream's
 * read function: when the reader wants bytes and the buffer is empty, it
 * runs curl until the write callback has put some there.  When the buffer
 * is full the callback pauses the transfer, and the reader resumes it once
 * it has drained the buffer, so memory stays bounded (back-pressure).  The
 * reader checks for interrupts between waits, so a cancel or a timeout
 * stops a transfer promptly.
 *
 * Redirects are followed here, not by libcurl: when a transfer ends with
 * 301, 302, 303, 307 or 308, the reader takes the URL libcurl would go to
 * (CURLINFO_REDIRECT_URL, a relative Location resolved), checks it as it
 * checks the first URL (http or https only, and a host in
 * orchestrator.http_allowed_hosts when that is set), counts it (at most
 * HTTP_MAX_REDIRECTS), and starts a new transfer of that very URL.  So
 * every hop is checked against the URL actually fetched, whatever the
 * Location header looks like.  The body of a redirect is never data.  As
 * libcurl and browsers do: 303 (and 301 or 302 after a POST) continues
 * with a GET without the body; Authorization and Cookie headers are sent
 * only to the first URL's scheme, host and port; the timeout covers all
 * the hops together.
 *
 * Statuses other than 2xx, timeouts, resets, bodies shorter than their
 * Content-Length and bodies over max_bytes are errors.  Callbacks only
 * record what went wrong; the reader raises it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "orchestrator.h"
#include "stream.h"

#define HTTP_BUFFER_SIZE	(256 * 1024)
#define HTTP_MAX_REDIRECTS	10
#define HTTP_POLL_MS		200

typedef struct HttpState
{
	CURLM	   *multi;
	CURL	   *easy;
	struct curl_slist *headers;
	char		errbuf[CURL_ERROR_SIZE];

	char	   *buf;
	size_t		len;			/* bytes in buf */
	size_t		pos;			/* bytes of buf already read */
	bool		paused;
	bool		done;
	CURLcode	result;

	int64		max_bytes;
	int64		received;
	bool		too_big;
	bool		out_of_memory;	/* in a callback */
	List	   *allowed_hosts;	/* NIL: any */

	/* the current response's headers (malloc'd: set in a callback) */
	bool		expect_status;	/* the next header line is a status line */
	char	   *content_type;
	char	   *etag;
	char	   *last_modified;
	bool		conditional;	/* a 304 is an answer, not an error */
	bool		any_status;		/* so is any final status (a sensor's poke) */

	/* the request, for each hop */
	List	   *req_headers;	/* "Name: value" strings */
	const char *method;
	TimestampTz start;
	int64		timeout_ms;		/* 0: none */
	char	   *origin;			/* the first URL's scheme://host:port */
	int			redirects;		/* hops so far */

	char	   *url;			/* the URL asked for */
	char	   *current_url;	/* the URL of this hop */
	HttpResult *out;
} HttpState;

static bool curl_initialized = false;

/* Forgets the response headers seen so far (a new response begins). */
static void
http_forget_headers(HttpState *st)
{
	free(st->content_type);
	free(st->etag);
	free(st->last_modified);
	st->content_type = NULL;
	st->etag = NULL;
	st->last_modified = NULL;
}

static void
http_cleanup(void *arg)
{
	HttpState  *st = arg;

	if (st->multi && st->easy)
		curl_multi_remove_handle(st->multi, st->easy);
	if (st->easy)
		curl_easy_cleanup(st->easy);
	if (st->multi)
		curl_multi_cleanup(st->multi);
	if (st->headers)
		curl_slist_free_all(st->headers);
	st->easy = NULL;
	st->multi = NULL;
	st->headers = NULL;
	http_forget_headers(st);
}

/*
 * The scheme, host and port (the scheme's default if none is given) of an
 * absolute URL, parsed by libcurl's own parser, as libcurl will parse it to
 * fetch it; false if it cannot be parsed.  *host is NULL if the URL has
 * none (file:///x).
 */
static bool
url_parts(const char *url, char **scheme, char **host, long *port)
{
	CURLU	   *u = curl_url();
	char	   *part = NULL;
	bool		ok = false;

	if (u == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	*host = NULL;
	*port = 0;
	if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_SCHEME, &part, 0) == CURLUE_OK)
	{
		ok = true;
		*scheme = pstrdup(part);
		curl_free(part);
		if (curl_url_get(u, CURLUPART_HOST, &part, 0) == CURLUE_OK)
		{
			*host = pstrdup(part);
			curl_free(part);
		}
		if (curl_url_get(u, CURLUPART_PORT, &part, CURLU_DEFAULT_PORT) == CURLUE_OK)
		{
			*port = strtol(part, NULL, 10);
			curl_free(part);
		}
	}
	curl_url_cleanup(u);
	return ok;
}

static bool
scheme_allowed(const char *scheme)
{
	return pg_strcasecmp(scheme, "http") == 0 || pg_strcasecmp(scheme, "https") == 0;
}

/* scheme://host:port, lower case, to compare origins */
static char *
url_origin(const char *scheme, const char *host, long port)
{
	char	   *origin = psprintf("%s://%s:%ld", scheme, host, port);

	for (char *c = origin; *c; c++)
		*c = pg_ascii_tolower((unsigned char) *c);
	return origin;
}

/* Whether tasks may reach this host (orchestrator.http_allowed_hosts). */
static bool
host_allowed(List *allowed, const char *host)
{
	ListCell   *lc;

	if (allowed == NIL)
		return true;
	foreach(lc, allowed)
	{
		if (pg_strcasecmp(host, (char *) lfirst(lc)) == 0)
			return true;
	}
	return false;
}

/*
 * A header's value if the line (len bytes, without its line end) is that
 * header, malloc'd, its surrounding blanks trimmed; *out is replaced.
 * False when malloc fails.
 */
static bool
header_value(const char *line, size_t len, const char *name, char **out)
{
	size_t		namelen = strlen(name);
	const char *v;
	const char *end = line + len;

	if (len <= namelen || line[namelen] != ':' ||
		pg_strncasecmp(line, name, namelen) != 0)
		return true;
	v = line + namelen + 1;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	free(*out);
	*out = malloc(end - v + 1);
	if (*out == NULL)
		return false;
	memcpy(*out, v, end - v);
	(*out)[end - v] = '\0';
	return true;
}

/*
 * Header callback: the type and validators of the response.  libcurl gives
 * whole header lines, whatever their length; they are read in place.
 */
static size_t
http_header_cb(char *data, size_t size, size_t nitems, void *userdata)
{
	HttpState  *st = userdata;
	size_t		n = size * nitems;
	size_t		len = n;

	while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
		len--;
	if (len == 0)
	{
		/* the end of a response's headers: another may follow (1xx) */
		st->expect_status = true;
		return n;
	}
	if (st->expect_status)
	{
		/* a new response: forget the last one's */
		st->expect_status = false;
		http_forget_headers(st);
		return n;
	}
	if (!header_value(data, len, "content-type", &st->content_type) ||
		!header_value(data, len, "etag", &st->etag) ||
		!header_value(data, len, "last-modified", &st->last_modified))
	{
		st->out_of_memory = true;
		return 0;				/* abort the transfer */
	}
	return n;
}

/* Write callback: into the buffer, or pause when it is full. */
static size_t
http_write_cb(char *data, size_t size, size_t nmemb, void *userdata)
{
	HttpState  *st = userdata;
	size_t		n = size * nmemb;
	long		status = 0;

	/* redirect, interim and error bodies are not data */
	curl_easy_getinfo(st->easy, CURLINFO_RESPONSE_CODE, &status);
	if (status < 200 || status >= 300)
		return n;
	if (st->max_bytes > 0 && st->received + (int64) n > st->max_bytes)
	{
		st->too_big = true;
		return 0;				/* CURLE_WRITE_ERROR */
	}
	if (HTTP_BUFFER_SIZE - st->len < n && st->pos > 0)
	{
		memmove(st->buf, st->buf + st->pos, st->len - st->pos);
		st->len -= st->pos;
		st->pos = 0;
	}
	if (HTTP_BUFFER_SIZE - st->len < n)
	{
		st->paused = true;
		return CURL_WRITEFUNC_PAUSE;
	}
	memcpy(st->buf + st->len, data, n);
	st->len += n;
	st->received += n;
	return n;
}

static void
http_raise(HttpState *st)
{
	const char *url = st->url;

	if (st->out_of_memory)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory reading the response from %s", url)));
	if (st->too_big || st->result == CURLE_FILESIZE_EXCEEDED)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("the response from %s is larger than max_bytes (" INT64_FORMAT ")",
						url, st->max_bytes)));
	switch (st->result)
	{
		case CURLE_HTTP_RETURNED_ERROR:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_EXCEPTION),
					 errmsg("HTTP status %ld from %s", st->out->status, url),
					 st->redirects > 0 ? errdetail("It was redirected to %s.", st->current_url) : 0));
			break;
		case CURLE_OPERATION_TIMEDOUT:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_EXCEPTION),
					 errmsg("timed out fetching %s", url),
					 errdetail("%s", st->errbuf)));
			break;
		case CURLE_PARTIAL_FILE:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_EXCEPTION),
					 errmsg("the response from %s ended early, after " INT64_FORMAT " bytes", url, st->received),
					 errdetail("%s", st->errbuf)));
			break;
		case CURLE_UNSUPPORTED_PROTOCOL:
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("only http and https URLs can be fetched: %s", url),
					 errdetail("%s", st->errbuf)));
			break;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_EXCEPTION),
					 errmsg("could not fetch %s: %s", url,
							st->errbuf[0] ? st->errbuf : curl_easy_strerror(st->result))));
	}
}

/*
 * Sets the options that change from one hop to the next: the URL, the
 * headers (credentials only for the first URL's origin), the time left.
 */
static void
http_set_hop(HttpState *st, const char *url, const char *origin)
{
	CURL	   *h = st->easy;
	bool		same_origin = strcmp(origin, st->origin) == 0;
	ListCell   *lc;

	curl_easy_setopt(h, CURLOPT_URL, url);
	st->current_url = pstrdup(url);

	if (st->headers)
		curl_slist_free_all(st->headers);
	st->headers = NULL;
	foreach(lc, st->req_headers)
	{
		const char *header = lfirst(lc);
		struct curl_slist *next;

		if (!same_origin &&
			(pg_strncasecmp(header, "authorization:", 14) == 0 ||
			 pg_strncasecmp(header, "cookie:", 7) == 0))
			continue;
		next = curl_slist_append(st->headers, header);
		if (next == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory")));
		st->headers = next;
	}
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, st->headers);

	if (st->timeout_ms > 0)
	{
		int64		left = st->timeout_ms -
			(GetCurrentTimestamp() - st->start) / 1000;

		if (left <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_EXCEPTION),
					 errmsg("timed out fetching %s", st->url),
					 errdetail("The timeout ran out after %d redirects.", st->redirects)));
		curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long) left);
	}
}

/*
 * After a transfer that ended well: if it was a redirect, checks where it
 * leads, as the first URL was checked, and starts the transfer of that URL;
 * returns whether it did.
 */
static bool
http_follow(HttpState *st)
{
	long		status = 0;
	char	   *location = NULL;
	char	   *next;
	char	   *scheme = NULL;
	char	   *host = NULL;
	long		port;

	curl_easy_getinfo(st->easy, CURLINFO_RESPONSE_CODE, &status);
	if (status != 301 && status != 302 && status != 303 &&
		status != 307 && status != 308)
		return false;
	/* the Location, resolved against this hop's URL */
	if (curl_easy_getinfo(st->easy, CURLINFO_REDIRECT_URL, &location) != CURLE_OK ||
		location == NULL)
		return false;			/* no usable Location: an HTTP status error */
	next = pstrdup(location);

	if (url_parts(next, &scheme, &host, &port) && !scheme_allowed(scheme))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("redirect to \"%s\" is not allowed", next),
				 errdetail("Only http and https URLs can be fetched.")));
	if (host == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_EXCEPTION),
				 errmsg("invalid redirect to \"%s\" from %s", next, st->current_url)));
	if (!host_allowed(st->allowed_hosts, host))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("redirect to \"%s\" is not allowed", next),
				 errdetail("orchestrator.http_allowed_hosts is \"%s\".", orch_http_allowed_hosts)));
	if (st->redirects >= HTTP_MAX_REDIRECTS)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_EXCEPTION),
				 errmsg("more than %d redirects fetching %s", HTTP_MAX_REDIRECTS, st->url)));

	curl_multi_remove_handle(st->multi, st->easy);
	st->redirects++;

	/* 303, and 301 or 302 after a POST: a GET, without the body */
	if ((status == 303 && strcmp(st->method, "HEAD") != 0) ||
		((status == 301 || status == 302) && strcmp(st->method, "POST") == 0))
	{
		curl_easy_setopt(st->easy, CURLOPT_HTTPGET, 1L);
		curl_easy_setopt(st->easy, CURLOPT_CUSTOMREQUEST, NULL);
		st->method = "GET";
	}
	http_set_hop(st, next, url_origin(scheme, host, port));

	st->done = false;
	st->result = CURLE_OK;
	st->errbuf[0] = '\0';
	st->expect_status = true;
	http_forget_headers(st);
	if (curl_multi_add_handle(st->multi, st->easy) != CURLM_OK)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not start an HTTP transfer")));
	return true;
}

static size_t
http_read(Stream *stream, char *buf, size_t len)
{
	HttpState  *st = stream->state;
	size_t		n;

	while (st->pos == st->len && !st->done)
	{
		int			running;
		CURLMsg    *msg;
		int			left;

		st->pos = st->len = 0;
		if (st->paused)
		{
			st->paused = false;
			curl_easy_pause(st->easy, CURLPAUSE_CONT);
			if (st->len > 0)
				break;
		}
		CHECK_FOR_INTERRUPTS();
		curl_multi_perform(st->multi, &running);
		while ((msg = curl_multi_info_read(st->multi, &left)) != NULL)
		{
			if (msg->msg == CURLMSG_DONE)
			{
				st->done = true;
				st->result = msg->data.result;
			}
		}
		/* a redirect: on to the next hop (its body was not data) */
		if (st->done && st->result == CURLE_OK && !st->too_big &&
			!st->out_of_memory && http_follow(st))
			continue;
		if (st->len > 0 || st->done)
			break;
		curl_multi_poll(st->multi, NULL, 0, HTTP_POLL_MS, NULL);
	}

	if (st->pos < st->len)
	{
		n = Min(len, st->len - st->pos);
		memcpy(buf, st->buf + st->pos, n);
		st->pos += n;
		stream_count_input(n);
		return n;
	}
	/* the end: was it a good one? */
	curl_easy_getinfo(st->easy, CURLINFO_RESPONSE_CODE, &st->out->status);
	if (st->result != CURLE_OK || st->too_big || st->out_of_memory)
		http_raise(st);
	if (st->content_type)
		st->out->content_type = pstrdup(st->content_type);
	if (st->etag)
		st->out->etag = pstrdup(st->etag);
	if (st->last_modified)
		st->out->last_modified = pstrdup(st->last_modified);
	if (st->out->status == 304 && st->conditional)
	{
		st->out->not_modified = true;
		return 0;
	}
	if (st->any_status)
		return 0;
	if (st->out->status < 200 || st->out->status >= 300)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_EXCEPTION),
				 errmsg("HTTP status %ld from %s", st->out->status, st->url),
				 st->redirects > 0 ? errdetail("It was redirected to %s.", st->current_url) : 0));
	{
		char	   *effective = NULL;

		if (curl_easy_getinfo(st->easy, CURLINFO_EFFECTIVE_URL, &effective) == CURLE_OK && effective)
			st->out->effective_url = pstrdup(effective);
	}
	return 0;
}

Stream *
http_source(const HttpRequest *req, HttpResult *result)
{
	HttpState  *st = palloc0(sizeof(HttpState));
	MemoryContextCallback *cb = palloc0(sizeof(MemoryContextCallback));
	ListCell   *lc;
	CURL	   *h;
	char	   *scheme = NULL;
	char	   *host = NULL;
	long		port;

	if (orch_http_allowed_hosts != NULL && orch_http_allowed_hosts[0] != '\0' &&
		!SplitGUCList(pstrdup(orch_http_allowed_hosts), ',', &st->allowed_hosts))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid orchestrator.http_allowed_hosts: \"%s\"", orch_http_allowed_hosts)));
	if (url_parts(req->url, &scheme, &host, &port) && !scheme_allowed(scheme))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only http and https URLs can be fetched: %s", req->url)));
	if (host == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid URL \"%s\"", req->url)));
	if (!host_allowed(st->allowed_hosts, host))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("host \"%s\" is not allowed", host),
				 errdetail("orchestrator.http_allowed_hosts is \"%s\".", orch_http_allowed_hosts)));

	if (!curl_initialized)
	{
		if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
			elog(ERROR, "curl_global_init failed");
		curl_initialized = true;
	}

	memset(result, 0, sizeof(HttpResult));
	st->out = result;
	st->url = pstrdup(req->url);
	st->origin = url_origin(scheme, host, port);
	st->method = pstrdup(req->method);
	st->start = GetCurrentTimestamp();
	st->timeout_ms = req->timeout_ms;
	st->expect_status = true;
	st->buf = palloc(HTTP_BUFFER_SIZE);
	st->max_bytes = req->max_bytes;
	foreach(lc, req->headers)
		st->req_headers = lappend(st->req_headers, pstrdup(lfirst(lc)));
	if (req->if_none_match)
		st->req_headers = lappend(st->req_headers, psprintf("If-None-Match: %s", req->if_none_match));
	if (req->if_modified_since)
		st->req_headers = lappend(st->req_headers, psprintf("If-Modified-Since: %s", req->if_modified_since));
	st->conditional = (req->if_none_match != NULL || req->if_modified_since != NULL);
	st->any_status = req->any_status;

	st->multi = curl_multi_init();
	st->easy = h = curl_easy_init();
	cb->func = http_cleanup;
	cb->arg = st;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
	if (st->multi == NULL || h == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not initialize libcurl")));

	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	/* redirects are followed by http_follow(), which checks each hop */
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_FAILONERROR, req->any_status ? 0L : 1L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, st->errbuf);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 30000L);
	if (req->max_bytes > 0)
		curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) req->max_bytes);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "orchestrator/0.1 (PostgreSQL extension)");
	curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, NULL);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, http_header_cb);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, st);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, http_write_cb);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, st);

	if (strcmp(req->method, "HEAD") == 0)
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	else if (strcmp(req->method, "GET") != 0)
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
	if (req->body != NULL)
	{
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) strlen(req->body));
		curl_easy_setopt(h, CURLOPT_COPYPOSTFIELDS, req->body);
		if (strcmp(req->method, "POST") != 0)
			curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
	}
	http_set_hop(st, req->url, st->origin);

	if (curl_multi_add_handle(st->multi, h) != CURLM_OK)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not start an HTTP transfer")));
	return stream_new("http", http_read, NULL, st);
}
