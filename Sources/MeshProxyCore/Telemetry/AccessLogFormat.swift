import Foundation

/// An Envoy access-log format string (`%START_TIME%`, `%REQ(X?Y):N%`, `%RESPONSE_FLAGS%`, …),
/// parsed once at config load — an unknown operator is a config error naming it — and
/// rendered per request, `-` for absent values as Envoy prints them
/// (docs/root/configuration/observability/access_log/usage.rst).
package struct AccessLogFormat: Sendable, Equatable {
    package enum Piece: Sendable, Equatable {
        case literal(String)
        case value(Operator)
    }

    package enum Operator: Sendable, Equatable {
        case startTime
        /// A request header (or pseudo-header `:method`, `:path`, `:authority`, `:scheme`), else
        /// the alternative, truncated to `limit` characters.
        case request(String, alternative: String?, limit: Int?)
        case response(String, limit: Int?)
        case protocolName, responseCode, responseFlags, responseCodeDetails, bytesReceived, bytesSent, duration
        case upstreamHost, upstreamCluster, upstreamClusterRaw, upstreamLocalAddress, upstreamTransportFailureReason
        case downstreamLocalAddress, downstreamRemoteAddress, requestedServerName, routeName, connectionTerminationDetails
    }

    package struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        package var description: String
    }

    package let pieces: [Piece]
    /// JSON instead of text: one object per request, `(key, operator)` in order; absent values are
    /// `null`, counts are numbers (Istio's `accessLogEncoding: JSON`).
    package private(set) var jsonFields: [(key: String, value: Operator)]? = nil

    /// Istio's JSON format (`EnvoyJSONLogFormatIstio`): the text format's operators as snake_case keys.
    package static let istioJSON: AccessLogFormat = {
        var format = try! AccessLogFormat(parsing: "")
        format.jsonFields = [
            ("start_time", .startTime), ("method", .request(":method", alternative: nil, limit: nil)),
            ("path", .request("x-envoy-original-path", alternative: ":path", limit: nil)), ("protocol", .protocolName),
            ("response_code", .responseCode), ("response_flags", .responseFlags), ("response_code_details", .responseCodeDetails),
            ("connection_termination_details", .connectionTerminationDetails),
            ("upstream_transport_failure_reason", .upstreamTransportFailureReason), ("bytes_received", .bytesReceived),
            ("bytes_sent", .bytesSent), ("duration", .duration),
            ("upstream_service_time", .response("x-envoy-upstream-service-time", limit: nil)),
            ("x_forwarded_for", .request("x-forwarded-for", alternative: nil, limit: nil)),
            ("user_agent", .request("user-agent", alternative: nil, limit: nil)),
            ("request_id", .request("x-request-id", alternative: nil, limit: nil)),
            ("authority", .request(":authority", alternative: nil, limit: nil)), ("upstream_host", .upstreamHost),
            ("upstream_cluster", .upstreamClusterRaw), ("upstream_local_address", .upstreamLocalAddress),
            ("downstream_local_address", .downstreamLocalAddress), ("downstream_remote_address", .downstreamRemoteAddress),
            ("requested_server_name", .requestedServerName), ("route_name", .routeName),
        ]
        return format
    }()

    package static func == (a: AccessLogFormat, b: AccessLogFormat) -> Bool {
        a.pieces == b.pieces && a.jsonFields?.map(\.key) == b.jsonFields?.map(\.key)
            && (a.jsonFields?.map(\.value) ?? []) == (b.jsonFields?.map(\.value) ?? [])
    }

    /// Istio's default text format (pilot/pkg/model/telemetry_logging.go).
    package static let istioDefault = try! AccessLogFormat(parsing:
        "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% "
        + "%RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% "
        + "%DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" "
        + "\"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% "
        + "%DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%")

    static let simple: [String: Operator] = [
        "START_TIME": .startTime, "PROTOCOL": .protocolName, "RESPONSE_CODE": .responseCode, "RESPONSE_FLAGS": .responseFlags,
        "RESPONSE_CODE_DETAILS": .responseCodeDetails, "BYTES_RECEIVED": .bytesReceived, "BYTES_SENT": .bytesSent, "DURATION": .duration,
        "UPSTREAM_HOST": .upstreamHost, "UPSTREAM_CLUSTER": .upstreamCluster, "UPSTREAM_CLUSTER_RAW": .upstreamClusterRaw,
        "UPSTREAM_LOCAL_ADDRESS": .upstreamLocalAddress, "UPSTREAM_TRANSPORT_FAILURE_REASON": .upstreamTransportFailureReason,
        "DOWNSTREAM_LOCAL_ADDRESS": .downstreamLocalAddress, "DOWNSTREAM_REMOTE_ADDRESS": .downstreamRemoteAddress,
        "REQUESTED_SERVER_NAME": .requestedServerName, "ROUTE_NAME": .routeName,
        "CONNECTION_TERMINATION_DETAILS": .connectionTerminationDetails,
    ]

    /// A format written over several lines (a YAML `|` block, as the design document writes it)
    /// becomes one line: the gateway logs one line per request, so line breaks and the spaces
    /// around them fold into one space.
    package init(parsing written: String) throws(ParseError) {
        var text = ""
        for (index, line) in written.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = index == 0 ? Substring(line) : line.drop { $0 == " " || $0 == "\t" }
            let kept = trimmed.reversed().drop { $0 == " " || $0 == "\t" }.reversed()
            if !text.isEmpty, !kept.isEmpty { text += " " }
            text += String(kept)
        }
        if !written.contains("\n") { text = written }
        var pieces: [Piece] = []
        var literal = ""
        var rest = Substring(text)
        while let percent = rest.firstIndex(of: "%") {
            literal += rest[..<percent]
            let afterPercent = rest.index(after: percent)
            // `%%` is a literal percent sign.
            if afterPercent < rest.endIndex, rest[afterPercent] == "%" {
                literal += "%"
                rest = rest[rest.index(after: afterPercent)...]
                continue
            }
            guard let close = rest[afterPercent...].firstIndex(of: "%") else {
                throw ParseError(description: "unterminated command operator at '\(rest[percent...].prefix(40))'")
            }
            let command = String(rest[afterPercent..<close])
            if !literal.isEmpty { pieces.append(.literal(literal)); literal = "" }
            pieces.append(.value(try Self.parseOperator(command)))
            rest = rest[rest.index(after: close)...]
        }
        literal += rest
        if !literal.isEmpty { pieces.append(.literal(literal)) }
        self.pieces = pieces
    }

    static func parseOperator(_ command: String) throws(ParseError) -> Operator {
        if let simple = simple[command] { return simple }
        // START_TIME(format) keeps Envoy's default rendering here.
        if command.hasPrefix("START_TIME(") { return .startTime }
        for (prefix, isRequest) in [("REQ(", true), ("RESP(", false)] where command.hasPrefix(prefix) {
            guard let close = command.lastIndex(of: ")") else { throw ParseError(description: "'%\(command)%' lacks its ')'") }
            let inside = command[command.index(command.startIndex, offsetBy: prefix.count)..<close]
            var limit: Int?
            let tail = command[command.index(after: close)...]
            if !tail.isEmpty {
                guard tail.hasPrefix(":"), let value = Int(tail.dropFirst()), value > 0 else {
                    throw ParseError(description: "'%\(command)%': a length limit is ':N' with N > 0")
                }
                limit = value
            }
            let names = inside.split(separator: "?", maxSplits: 1).map { $0.lowercased() }
            guard let name = names.first, !name.isEmpty else { throw ParseError(description: "'%\(command)%' names no header") }
            return isRequest ? .request(name, alternative: names.count > 1 ? names[1] : nil, limit: limit) : .response(name, limit: limit)
        }
        throw ParseError(description: "unknown command operator '%\(command)%' (EastWest renders START_TIME, REQ(), RESP(), PROTOCOL, RESPONSE_CODE, RESPONSE_FLAGS, BYTES_RECEIVED, BYTES_SENT, DURATION, UPSTREAM_HOST, UPSTREAM_CLUSTER, DOWNSTREAM_REMOTE_ADDRESS, REQUESTED_SERVER_NAME, ROUTE_NAME, …)")
    }

    /// One request's line.
    package func render(_ record: HTTPRequestRecord, duration: Int) -> String {
        if let jsonFields { return Self.json(jsonFields, record, duration: duration) }
        var line = ""
        for piece in pieces {
            switch piece {
            case .literal(let text): line += text
            case .value(let value): line += Self.value(value, record, duration: duration) ?? "-"
            }
        }
        return line
    }

    static func json(_ fields: [(key: String, value: Operator)], _ record: HTTPRequestRecord, duration: Int) -> String {
        let numeric: Set<String> = ["response_code", "bytes_received", "bytes_sent", "duration", "upstream_service_time"]
        var parts: [String] = []
        for (key, op) in fields {
            let text: String
            if let value = value(op, record, duration: duration) {
                text = numeric.contains(key) && Int(value) != nil ? value : quoted(value)
            } else {
                text = "null"
            }
            parts.append("\"\(key)\":\(text)")
        }
        return "{" + parts.joined(separator: ",") + "}"
    }

    /// A JSON string literal.
    static func quoted(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.value < 0x20: result += String(format: "\\u%04x", scalar.value)
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }

    static func value(_ value: Operator, _ record: HTTPRequestRecord, duration: Int) -> String? {
        func limited(_ text: String?, _ limit: Int?) -> String? {
            guard let text else { return nil }
            return limit.map { String(text.prefix($0)) } ?? text
        }
        switch value {
        case .startTime:
            return record.startDate.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted))
        case .request(let name, let alternative, let limit):
            return limited(record.requestHeader(name) ?? alternative.flatMap(record.requestHeader), limit)
        case .response(let name, let limit): return limited(record.responseHeader(name), limit)
        case .protocolName: return record.protocol
        case .responseCode: return String(record.responseCode)
        case .responseFlags: return record.flagText
        case .responseCodeDetails: return record.responseCodeDetails
        case .bytesReceived: return String(record.bytesReceived)
        case .bytesSent: return String(record.bytesSent)
        case .duration: return String(duration)
        case .upstreamHost: return record.upstream?.address.description
        case .upstreamCluster: return record.clusterName.map { "\($0);" }
        case .upstreamClusterRaw: return record.clusterName
        case .downstreamLocalAddress: return record.downstreamLocal
        case .downstreamRemoteAddress: return record.downstreamRemote
        case .requestedServerName: return record.serverName
        case .routeName: return record.routeName.isEmpty ? nil : record.routeName
        case .upstreamLocalAddress, .upstreamTransportFailureReason, .connectionTerminationDetails: return nil
        }
    }
}

/// Istio's `accessLogEncoding`.
package enum AccessLogEncoding: String, Codable, Sendable {
    case text = "TEXT", json = "JSON"
}

extension AccessLogFormat {
    /// The format a config asks for: JSON with Istio's keys, its own text format, or Istio's text.
    package static func configured(format: String?, encoding: AccessLogEncoding?) -> AccessLogFormat {
        if encoding == .json { return .istioJSON }
        // Checked at config load, so a format here always parses.
        return format.flatMap { try? AccessLogFormat(parsing: $0) } ?? .istioDefault
    }

    /// A config's `accessLogFormat` and `accessLogEncoding`, checked at load (the error names
    /// the operator).
    static func validate(_ text: String?, encoding: AccessLogEncoding?, at root: FieldPath, map: SourceMap) -> [ConfigError] {
        guard let text else { return [] }
        if encoding == .json {
            return [map.error(.invalidValue, at: root.key("accessLogFormat"),
                              "with accessLogEncoding JSON the keys are Istio's; a custom JSON format is not carried out yet")]
        }
        do {
            _ = try AccessLogFormat(parsing: text)
            return []
        } catch {
            return [map.error(.invalidValue, at: root.key("accessLogFormat"), error.description)]
        }
    }
}
