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
 * Only http and https, for the request and every redirect (at most
 * HTTP_MAX_REDIRECTS), and only to hosts in orchestrator.http_allowed_hosts
 * when that is set.  Statuses other than 2xx, timeouts, resets, bodies
 * shorter than their Content-Length and bodies over max_bytes are errors.
 * Callbacks only record what went wrong; the reader raises it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "miscadmin.h"
#include "utils/memutils.h"
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
	List	   *allowed_hosts;	/* NIL: any */
	bool		denied;			/* a redirect to a host not allowed */
	char		denied_host[256];
	char		content_type[256];
	char		etag[256];
	char		last_modified[128];
	bool		conditional;	/* a 304 is an answer, not an error */

	char	   *url;			/* of the current response */
	HttpResult *out;
} HttpState;

static bool curl_initialized = false;

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
}

/*
 * The host part of a URL, resolved against base if relative, into host;
 * false if it cannot be parsed.  Called from the header callback, so it
 * raises nothing and allocates only with libcurl.
 */
static bool
url_host(const char *base, const char *url, char *host, size_t size)
{
	CURLU	   *u = curl_url();
	char	   *part = NULL;
	bool		ok = false;

	if (u == NULL)
		return false;
	if ((base == NULL || curl_url_set(u, CURLUPART_URL, base, 0) == CURLUE_OK) &&
		curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_HOST, &part, 0) == CURLUE_OK)
	{
		strlcpy(host, part, size);
		curl_free(part);
		ok = true;
	}
	curl_url_cleanup(u);
	return ok;
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

/* Header callback: the status of each response, its type, its redirects. */
static size_t
http_header_cb(char *data, size_t size, size_t nitems, void *userdata)
{
	HttpState  *st = userdata;
	size_t		n = size * nitems;
	char		line[2048];
	char	   *value;

	strlcpy(line, data, Min(n + 1, sizeof(line)));
	line[strcspn(line, "\r\n")] = '\0';
	value = strchr(line, ':');
	if (value != NULL)
	{
		value++;
		while (*value == ' ' || *value == '\t')
			value++;
	}

	if (strncmp(line, "HTTP/", 5) == 0)
	{
		/* a new response (after a redirect, say): forget the last one's */
		const char *sp = strchr(line, ' ');

		st->out->status = sp ? strtol(sp + 1, NULL, 10) : 0;
		st->content_type[0] = '\0';
		st->etag[0] = '\0';
		st->last_modified[0] = '\0';
	}
	else if (value != NULL && pg_strncasecmp(line, "content-type:", 13) == 0)
		strlcpy(st->content_type, value, sizeof(st->content_type));
	else if (value != NULL && pg_strncasecmp(line, "etag:", 5) == 0)
		strlcpy(st->etag, value, sizeof(st->etag));
	else if (value != NULL && pg_strncasecmp(line, "last-modified:", 14) == 0)
		strlcpy(st->last_modified, value, sizeof(st->last_modified));
	else if (value != NULL && pg_strncasecmp(line, "location:", 9) == 0 &&
			 st->out->status >= 300 && st->out->status < 400 &&
			 st->allowed_hosts != NIL)
	{
		char		host[256];

		if (!url_host(st->url, value, host, sizeof(host)) ||
			!host_allowed(st->allowed_hosts, host))
		{
			strlcpy(st->denied_host, value, sizeof(st->denied_host));
			st->denied = true;
			return 0;			/* abort the transfer */
		}
	}
	return n;
}

/* Write callback: into the buffer, or pause when it is full. */
static size_t
http_write_cb(char *data, size_t size, size_t nmemb, void *userdata)
{
	HttpState  *st = userdata;
	size_t		n = size * nmemb;

	/* redirect and error bodies are not data */
	if (st->out->status < 200 || st->out->status >= 300)
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

	if (st->denied)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("redirect to \"%s\" is not allowed", st->denied_host),
				 errdetail("orchestrator.http_allowed_hosts is \"%s\".", orch_http_allowed_hosts)));
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
					 errmsg("HTTP status %ld from %s", st->out->status, url)));
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
		case CURLE_TOO_MANY_REDIRECTS:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_EXCEPTION),
					 errmsg("more than %d redirects fetching %s", HTTP_MAX_REDIRECTS, url)));
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
	if (st->result != CURLE_OK || st->denied || st->too_big)
		http_raise(st);
	if (st->content_type[0])
		st->out->content_type = pstrdup(st->content_type);
	if (st->etag[0])
		st->out->etag = pstrdup(st->etag);
	if (st->last_modified[0])
		st->out->last_modified = pstrdup(st->last_modified);
	if (st->out->status == 304 && st->conditional)
	{
		st->out->not_modified = true;
		return 0;
	}
	if (st->out->status < 200 || st->out->status >= 300)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_EXCEPTION),
				 errmsg("HTTP status %ld from %s", st->out->status, st->url)));
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
	char		host[256];

	if (orch_http_allowed_hosts != NULL && orch_http_allowed_hosts[0] != '\0' &&
		!SplitGUCList(pstrdup(orch_http_allowed_hosts), ',', &st->allowed_hosts))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid orchestrator.http_allowed_hosts: \"%s\"", orch_http_allowed_hosts)));
	if (!url_host(NULL, req->url, host, sizeof(host)))
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
	st->buf = palloc(HTTP_BUFFER_SIZE);
	st->max_bytes = req->max_bytes;
	st->multi = curl_multi_init();
	st->easy = h = curl_easy_init();
	cb->func = http_cleanup;
	cb->arg = st;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
	if (st->multi == NULL || h == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not initialize libcurl")));

	curl_easy_setopt(h, CURLOPT_URL, req->url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(h, CURLOPT_MAXREDIRS, (long) HTTP_MAX_REDIRECTS);
	curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, st->errbuf);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 30000L);
	if (req->timeout_ms > 0)
		curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long) req->timeout_ms);
	if (req->max_bytes > 0)
		curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) req->max_bytes);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "orchestrator/0.1 (PostgreSQL extension)");
	curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, NULL);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, http_header_cb);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, st);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, http_write_cb);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, st);

	foreach(lc, req->headers)
		st->headers = curl_slist_append(st->headers, (char *) lfirst(lc));
	if (req->if_none_match)
		st->headers = curl_slist_append(st->headers, psprintf("If-None-Match: %s", req->if_none_match));
	if (req->if_modified_since)
		st->headers = curl_slist_append(st->headers, psprintf("If-Modified-Since: %s", req->if_modified_since));
	st->conditional = (req->if_none_match != NULL || req->if_modified_since != NULL);
	if (st->headers)
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, st->headers);

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

	if (curl_multi_add_handle(st->multi, h) != CURLM_OK)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not start an HTTP transfer")));
	return stream_new("http", http_read, NULL, st);
}
