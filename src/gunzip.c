/*-------------------------------------------------------------------------
 *
 * gunzip.c
 *	  The gunzip filter: decompresses gzip data as it streams.
 *
 * inflateInit2(16 + MAX_WBITS) reads the gzip format.  A file made of
 * several gzip members (as `cat a.gz b.gz` makes) decompresses whole; a
 * stream that ends inside a member, or that is not gzip, is an error, never
 * a silently short result.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <zlib.h>

#include "utils/memutils.h"

#include "stream.h"

#define GUNZIP_INPUT_SIZE (64 * 1024)

typedef struct GunzipState
{
	z_stream	z;
	bool		initialized;
	char	   *in;
	bool		input_done;		/* the input stream has ended */
	bool		member_done;	/* at the end of a member */
	uint64		members;
} GunzipState;

static void
gunzip_cleanup(void *arg)
{
	GunzipState *st = arg;

	if (st->initialized)
		inflateEnd(&st->z);
	st->initialized = false;
}

static size_t
gunzip_read(Stream *stream, char *buf, size_t len)
{
	GunzipState *st = stream->state;

	st->z.next_out = (Bytef *) buf;
	st->z.avail_out = (uInt) Min(len, (size_t) UINT_MAX);

	while (st->z.avail_out == len)
	{
		int			rc;

		if (st->z.avail_in == 0 && !st->input_done)
		{
			size_t		n = stream_read(stream->input, st->in, GUNZIP_INPUT_SIZE);

			if (n == 0)
				st->input_done = true;
			st->z.next_in = (Bytef *) st->in;
			st->z.avail_in = (uInt) n;
		}
		if (st->z.avail_in == 0 && st->input_done)
		{
			if (!st->member_done)
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("gzip data is truncated"),
						 errdetail("The input ended inside gzip member %llu, after %llu compressed bytes.",
								   (unsigned long long) st->members + 1,
								   (unsigned long long) stream->input->bytes)));
			break;				/* the end */
		}
		if (st->member_done)
		{
			/* another member follows */
			if (inflateReset(&st->z) != Z_OK)
				elog(ERROR, "inflateReset failed");
			st->member_done = false;
		}

		rc = inflate(&st->z, Z_NO_FLUSH);
		if (rc == Z_STREAM_END)
		{
			st->member_done = true;
			st->members++;
		}
		else if (rc == Z_BUF_ERROR && st->z.avail_in == 0)
			continue;			/* needs more input */
		else if (rc != Z_OK)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("gzip data is corrupt: %s",
							st->z.msg ? st->z.msg : zError(rc)),
					 errdetail("After %llu compressed bytes.",
							   (unsigned long long) stream->input->bytes - st->z.avail_in)));
	}
	return len - st->z.avail_out;
}

Stream *
gunzip_filter(Stream *input)
{
	GunzipState *st = palloc0(sizeof(GunzipState));
	MemoryContextCallback *cb = palloc0(sizeof(MemoryContextCallback));

	st->in = palloc(GUNZIP_INPUT_SIZE);
	if (inflateInit2(&st->z, 16 + MAX_WBITS) != Z_OK)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not initialize gzip decompression")));
	st->initialized = true;
	cb->func = gunzip_cleanup;
	cb->arg = st;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
	return stream_new("gunzip", gunzip_read, input, st);
}

/*
 * compression "gzip": always gunzip; "none": never; "auto": if the data
 * starts with gzip's magic bytes.
 */
Stream *
maybe_gunzip(Stream *input, const char *compression)
{
	const char *head;

	if (compression == NULL || strcmp(compression, "auto") == 0)
	{
		if (stream_peek(input, &head, 2) == 2 &&
			(unsigned char) head[0] == 0x1f && (unsigned char) head[1] == 0x8b)
			return gunzip_filter(input);
		return input;
	}
	if (strcmp(compression, "gzip") == 0)
		return gunzip_filter(input);
	return input;
}
