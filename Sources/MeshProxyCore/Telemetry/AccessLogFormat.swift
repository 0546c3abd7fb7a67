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
        var line = ""
        for piece in pieces {
            switch piece {
            case .literal(let text): line += text
            case .value(let value): line += Self.value(value, record, duration: duration) ?? "-"
            }
        }
        return line
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

extension AccessLogFormat {
    /// A config's `accessLogFormat`, checked at load (the error names the operator).
    static func validate(_ text: String?, at path: FieldPath, map: SourceMap) -> [ConfigError] {
        guard let text else { return [] }
        do {
            _ = try AccessLogFormat(parsing: text)
            return []
        } catch {
            return [map.error(.invalidValue, at: path, error.description)]
        }
    }
}
