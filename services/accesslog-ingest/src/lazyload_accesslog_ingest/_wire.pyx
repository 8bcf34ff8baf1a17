# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The ALS hot path in C: the keys of a `StreamAccessLogsMessage`'s entries, read off its bytes.

Compiled from this file when the package is built (Cython); `parsing` falls back to the
protobuf runtime when it is not. It reads the protobuf wire format directly and walks only the
path to the fields an edge depends on (see `parsing.http_keys`/`tcp_keys`, whose keys it gives
exactly), skipping everything else by its length. Protobuf's rules are kept where they change
what those fields read: the last value of a scalar wins, a sub-message seen twice is merged, a
oneof member clears the others, a field of the wrong wire type is an unknown field, and unknown
fields (groups included) are skipped. Every tag, varint and length of the message is checked on
the way; a broken one raises `ValueError` for the whole message, as the protobuf runtime would.
UTF-8 is checked on the strings read (a skipped string is not decoded, so not checked).

Field numbers are Envoy's v3 API (wire-stable by definition; `tests/test_wire.py` checks them
against the descriptors).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcmp

cdef enum:
    # wire types
    VARINT = 0
    FIXED64 = 1
    LEN = 2
    SGROUP = 3
    EGROUP = 4
    FIXED32 = 5
    MAX_DEPTH = 100  # the protobuf runtime's default recursion limit

# the `log_entries` oneof of StreamAccessLogsMessage
HTTP = 1
TCP = 2

cdef const char* GRPC_TYPE = b"application/grpc"
cdef const char* CONTENT_TYPE = b"content-type"
cdef const char* SOURCE_NS = b"slime-source-ns"
cdef const char* SOURCE_IP = b"lazyload-source-ip"
cdef const char* CLIENT_CERT = b"x-forwarded-client-cert"
cdef const char* INBOUND = b"inbound|"

# ResponseFlags fields that mean the request never reached a destination (`parsing._unrouted`)
cdef uint32_t[6] UNROUTED_FIELDS = [9, 25, 27, 18, 19, 22]


cdef struct Span:
    Py_ssize_t start
    Py_ssize_t size  # -1: absent


cdef struct Reader:
    const unsigned char* buf
    Py_ssize_t pos
    Py_ssize_t end


cdef struct Socket:
    int case  # Address oneof: 0 none, 1 socket_address, 2 pipe, 3 envoy_internal_address
    Span address
    int port_case  # SocketAddress port_specifier: 0 none, 3 port_value, 4 named_port
    uint32_t port_value


cdef struct Entry:
    Socket caller  # AccessLogCommon.downstream_direct_remote_address (20)
    Socket local  # AccessLogCommon.downstream_local_address (3)
    Span upstream_cluster  # AccessLogCommon.upstream_cluster (15)
    bint has_flags  # AccessLogCommon.response_flags (16) present
    uint32_t unrouted  # bit i: UNROUTED_FIELDS[i] is true
    bint has_start  # AccessLogCommon.start_time (5)
    int64_t seconds
    int32_t nanos
    Span authority  # HTTPRequestProperties.authority (3)
    Span content_type  # request_headers (13) ["content-type"]
    Span source_ns  # request_headers ["slime-source-ns"]
    Span source_ip  # request_headers ["lazyload-source-ip"]
    Span client_cert  # request_headers ["x-forwarded-client-cert"]


class WireError(ValueError):
    """The bytes break the protobuf wire format."""


cdef int fail(str why) except -1:
    raise WireError(why)


cdef inline int varint(Reader* r, uint64_t* out) except -1:
    cdef uint64_t result = 0
    cdef int shift = 0
    cdef unsigned char byte
    while True:
        if r.pos >= r.end:
            fail("truncated varint")
        byte = r.buf[r.pos]
        r.pos += 1
        result |= (<uint64_t>(byte & 0x7F)) << shift
        if byte < 0x80:
            out[0] = result
            return 0
        shift += 7
        if shift >= 70:
            fail("varint longer than 10 bytes")


cdef inline int tag(Reader* r, uint32_t* number, int* wire) except -1:
    cdef uint64_t value
    varint(r, &value)
    if value > 0xFFFFFFFF or (value >> 3) == 0:
        fail("invalid field tag")
    number[0] = <uint32_t>(value >> 3)
    wire[0] = <int>(value & 7)
    return 0


cdef inline int length(Reader* r, Span* span) except -1:
    cdef uint64_t size
    varint(r, &size)
    if size > <uint64_t>(r.end - r.pos):
        fail("length past the end of the message")
    span.start = r.pos
    span.size = <Py_ssize_t>size
    r.pos += <Py_ssize_t>size
    return 0


cdef int skip(Reader* r, uint32_t number, int wire, int depth) except -1:
    """Skip the value of a field whose tag was just read."""
    cdef uint64_t ignored
    cdef Span span
    cdef uint32_t inner
    cdef int inner_wire
    if wire == VARINT:
        varint(r, &ignored)
    elif wire == FIXED64 or wire == FIXED32:
        if r.end - r.pos < (8 if wire == FIXED64 else 4):
            fail("truncated fixed-width field")
        r.pos += 8 if wire == FIXED64 else 4
    elif wire == LEN:
        length(r, &span)
    elif wire == SGROUP:
        if depth >= MAX_DEPTH:
            fail("groups nested too deep")
        while True:
            if r.pos >= r.end:
                fail("unterminated group")
            tag(r, &inner, &inner_wire)
            if inner_wire == EGROUP:
                if inner != number:
                    fail("mismatched end of group")
                return 0
            skip(r, inner, inner_wire, depth + 1)
    else:  # an end of group outside a group, or wire type 6/7
        fail("invalid wire type")
    return 0


cdef inline Reader sub(const unsigned char* buf, Span span):
    cdef Reader r
    r.buf = buf
    r.pos = span.start
    r.end = span.start + span.size
    return r


cdef inline int bool_field(Reader* r, bint* out) except -1:
    cdef uint64_t value
    varint(r, &value)
    out[0] = value != 0
    return 0


cdef int socket_address(const unsigned char* buf, Span span, Socket* s) except -1:
    """Merge a SocketAddress into `s` (address 2, port_value 3, named_port 4)."""
    cdef Reader r = sub(buf, span)
    cdef uint32_t number
    cdef int wire
    cdef uint64_t value
    cdef Span field
    while r.pos < r.end:
        tag(&r, &number, &wire)
        if number == 2 and wire == LEN:
            length(&r, &s.address)
        elif number == 3 and wire == VARINT:
            varint(&r, &value)
            s.port_case = 3
            s.port_value = <uint32_t>value
        elif number == 4 and wire == LEN:
            length(&r, &field)
            s.port_case = 4
            s.port_value = 0
        else:
            skip(&r, number, wire, 0)
    return 0


cdef int address(const unsigned char* buf, Span span, Socket* s) except -1:
    """Merge an Address into `s`: a socket_address (1), or another member of its oneof, which
    clears the socket address."""
    cdef Reader r = sub(buf, span)
    cdef uint32_t number
    cdef int wire
    cdef Span field
    while r.pos < r.end:
        tag(&r, &number, &wire)
        if 1 <= number <= 3 and wire == LEN:
            length(&r, &field)
            if number == 1:
                if s.case != 1:
                    s.address.size = -1
                    s.port_case = 0
                    s.port_value = 0
                s.case = 1
                socket_address(buf, field, s)
            else:
                s.case = number
                s.address.size = -1
                s.port_case = 0
                s.port_value = 0
        else:
            skip(&r, number, wire, 0)
    return 0


cdef int response_flags(const unsigned char* buf, Span span, Entry* e) except -1:
    cdef Reader r = sub(buf, span)
    cdef uint32_t number
    cdef int wire, i
    cdef bint value
    e.has_flags = True
    while r.pos < r.end:
        tag(&r, &number, &wire)
        if wire == VARINT:
            for i in range(6):
                if UNROUTED_FIELDS[i] == number:
                    bool_field(&r, &value)
                    if value:
                        e.unrouted |= (1u << i)
                    else:
                        e.unrouted &= ~(1u << i)
                    break
            else:
                skip(&r, number, wire, 0)
        else:
            skip(&r, number, wire, 0)
    return 0


cdef int timestamp(const unsigned char* buf, Span span, Entry* e) except -1:
    cdef Reader r = sub(buf, span)
    cdef uint32_t number
    cdef int wire
    cdef uint64_t value
    e.has_start = True
    while r.pos < r.end:
        tag(&r, &number, &wire)
        if number == 1 and wire == VARINT:
            varint(&r, &value)
            e.seconds = <int64_t>value
        elif number == 2 and wire == VARINT:
            varint(&r, &value)
            e.nanos = <int32_t>value
        else:
            skip(&r, number, wire, 0)
    return 0


cdef int common(const unsigned char* buf, Span span, Entry* e) except -1:
    """Merge an AccessLogCommon into `e`."""
    cdef Reader r = sub(buf, span)
    cdef uint32_t number
    cdef int wire
    cdef Span field
    while r.pos < r.end:
        tag(&r, &number, &wire)
        if wire != LEN:
            skip(&r, number, wire, 0)
            continue
        length(&r, &field)
        if number == 20:
            address(buf, field, &e.caller)
        elif number == 3:
            address(buf, field, &e.local)
        elif number == 15:
            e.upstream_cluster = field
        elif number == 16:
            response_flags(buf, field, e)
        elif number == 5:
            timestamp(buf, field, e)
    return 0


cdef inline bint equals(const unsigned char* buf, Span span, const char* text, Py_ssize_t size):
    return span.size == size and memcmp(buf + span.start, text, size) == 0


cdef int header(const unsigned char* buf, Span span, Entry* e) except -1:
    """One `request_headers` map entry (key 1, value 2): keep the headers the key reads."""
    cdef Reader r = sub(buf, span)
    cdef uint32_t number
    cdef int wire
    cdef Span field
    cdef Span key
    cdef Span value
    key.start = value.start = span.start
    key.size = value.size = 0
    while r.pos < r.end:
        tag(&r, &number, &wire)
        if (number == 1 or number == 2) and wire == LEN:
            length(&r, &field)
            if number == 1:
                key = field
            else:
                value = field
        else:
            skip(&r, number, wire, 0)
    if equals(buf, key, CONTENT_TYPE, 12):
        e.content_type = value
    elif equals(buf, key, SOURCE_NS, 15):
        e.source_ns = value
    elif equals(buf, key, SOURCE_IP, 18):
        e.source_ip = value
    elif equals(buf, key, CLIENT_CERT, 23):
        e.client_cert = value
    return 0


cdef int request(const unsigned char* buf, Span span, Entry* e) except -1:
    """Merge an HTTPRequestProperties into `e` (authority 3, request_headers 13)."""
    cdef Reader r = sub(buf, span)
    cdef uint32_t number
    cdef int wire
    cdef Span field
    while r.pos < r.end:
        tag(&r, &number, &wire)
        if (number == 3 or number == 13) and wire == LEN:
            length(&r, &field)
            if number == 3:
                e.authority = field
            else:
                header(buf, field, e)
        else:
            skip(&r, number, wire, 0)
    return 0


cdef inline void clear(Entry* e):
    e.caller.case = e.local.case = 0
    e.caller.address.size = e.local.address.size = -1
    e.caller.port_case = e.local.port_case = 0
    e.caller.port_value = e.local.port_value = 0
    e.upstream_cluster.size = -1
    e.has_flags = e.has_start = False
    e.unrouted = 0
    e.seconds = 0
    e.nanos = 0
    e.authority.size = e.content_type.size = e.source_ns.size = -1
    e.source_ip.size = e.client_cert.size = -1


cdef int entry(const unsigned char* buf, Span span, Entry* e, bint http) except -1:
    """Read one HTTPAccessLogEntry (common 1, request 3) or TCPAccessLogEntry (common 1)."""
    cdef Reader r = sub(buf, span)
    cdef uint32_t number
    cdef int wire
    cdef Span field
    clear(e)
    while r.pos < r.end:
        tag(&r, &number, &wire)
        if number == 1 and wire == LEN:
            length(&r, &field)
            common(buf, field, e)
        elif http and number == 3 and wire == LEN:
            length(&r, &field)
            request(buf, field, e)
        else:
            skip(&r, number, wire, 0)
    return 0


cdef inline str text(const unsigned char* buf, Span span):
    """The UTF-8 string at `span` ("" when absent); UnicodeDecodeError when it is not UTF-8."""
    if span.size <= 0:
        return ""
    return PyUnicode_DecodeUTF8(<const char*>buf + span.start, span.size, NULL)


cdef inline bint starts(const unsigned char* buf, Span span, const char* prefix, Py_ssize_t size):
    return span.size >= size and memcmp(buf + span.start, prefix, size) == 0


cdef inline object start_time(Entry* e):
    if not e.has_start:
        return None
    return e.seconds + e.nanos / 1e9


def outline(bytes raw):
    """(the identifier's bytes or None, which `log_entries` member is set: 0, HTTP or TCP,
    where its entries begin).

    Occurrences of the identifier are concatenated: parsed together, they merge as protobuf
    merges them. The entries begin at the first occurrence of the member after the last one of
    the other member (a oneof member clears the others). The whole top level is checked."""
    cdef const unsigned char* buf = <const unsigned char*>PyBytes_AS_STRING(raw)
    cdef Reader r
    cdef uint32_t number
    cdef int wire
    cdef Span field
    cdef int kind = 0
    cdef int member
    cdef Py_ssize_t at
    cdef Py_ssize_t begin = 0
    cdef list identifier = None
    r.buf, r.pos, r.end = buf, 0, PyBytes_GET_SIZE(raw)
    while r.pos < r.end:
        at = r.pos
        tag(&r, &number, &wire)
        if 1 <= number <= 3 and wire == LEN:
            length(&r, &field)
            if number == 1:
                if identifier is None:
                    identifier = []
                identifier.append(raw[field.start:field.start + field.size])
            else:
                member = HTTP if number == 2 else TCP
                if member != kind:
                    kind, begin = member, at
        else:
            skip(&r, number, wire, 0)
    return (b"".join(identifier) if identifier is not None else None), kind, begin


def keys(bytes raw, int kind, Py_ssize_t begin, bint direction):
    """(entries, firsts, repeats) of the `log_entries` member `kind` from `begin` on (as
    `outline` gave them): `parsing.http_keys`/`tcp_keys` of its entries, the value of each first
    being its entry's start time (Unix seconds, None when absent). The occurrences of the member
    merge, so their entries add up."""
    cdef const unsigned char* buf = <const unsigned char*>PyBytes_AS_STRING(raw)
    cdef Reader top
    cdef Reader r
    cdef uint32_t number
    cdef uint32_t wanted = 2 if kind == HTTP else 3
    cdef int wire
    cdef Span field
    cdef Span item
    cdef Entry e
    cdef bint http = kind == HTTP
    cdef Py_ssize_t count = 0
    cdef dict firsts = {}
    cdef dict repeats = {}
    cdef object key
    cdef object seen
    cdef bint unrouted, inbound, grpc
    top.buf, top.pos, top.end = buf, begin, PyBytes_GET_SIZE(raw)
    while top.pos < top.end:
        tag(&top, &number, &wire)
        if number != wanted or wire != LEN:
            skip(&top, number, wire, 0)
            continue
        length(&top, &field)
        r = sub(buf, field)
        while r.pos < r.end:
            tag(&r, &number, &wire)
            if number != 1 or wire != LEN:
                skip(&r, number, wire, 0)
                continue
            length(&r, &item)
            entry(buf, item, &e, http)
            count += 1
            unrouted = e.has_flags and e.unrouted != 0
            inbound = direction and starts(buf, e.upstream_cluster, INBOUND, 8)
            if http:
                grpc = starts(buf, e.content_type, GRPC_TYPE, 16)
                key = (
                    text(buf, e.caller.address) if e.caller.case == 1 else "",
                    text(buf, e.authority),
                    unrouted,
                    inbound,
                    grpc,
                    text(buf, e.source_ns),
                    text(buf, e.source_ip),
                    text(buf, e.client_cert),
                )
            else:
                key = (
                    "tcp",
                    text(buf, e.caller.address) if e.caller.case == 1 else "",
                    text(buf, e.local.address) if e.local.case == 1 else "",
                    e.local.port_value if e.local.case == 1 else 0,
                    (
                        ("port_value" if e.local.port_case == 3 else "named_port")
                        if e.local.case == 1 and e.local.port_case != 0
                        else None
                    ),
                    unrouted,
                    inbound,
                )
            seen = firsts.get(key, firsts)
            if seen is firsts:
                firsts[key] = start_time(&e)
            else:
                repeats[key] = repeats.get(key, 1) + 1
    return count, firsts, repeats
