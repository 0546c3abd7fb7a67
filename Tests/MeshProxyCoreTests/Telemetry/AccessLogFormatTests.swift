import Foundation
import NIOHTTP1
import Testing
@testable import MeshProxyCore

@Suite("Access-log format (Envoy command operators)")
struct AccessLogFormatTests {
    func record() -> HTTPRequestRecord {
        var record = HTTPRequestRecord()
        record.startDate = Date(timeIntervalSince1970: 1_764_590_400.125)
        record.method = "GET"; record.path = "/reviews/0?x=1"; record.protocol = "HTTP/2"; record.authority = "reviews:9080"
        record.responseCode = 200; record.bytesReceived = 12; record.bytesSent = 345
        record.requestHeaders = ["x-forwarded-for": "127.0.0.9", "user-agent": "curl/8", "x-request-id": "abc"]
        record.responseHeaders = ["x-envoy-upstream-service-time": "7"]
        record.route = Route(service: ServiceKey(host: "reviews.default.svc.cluster.local", port: 9080), subset: "v2", selector: [:])
        record.upstream = .local(Endpoint(address: HostPort(host: "127.0.2.10", port: 9080)))
        return record
    }

    @Test("The design document's format works as written (a YAML block: one line per request)")
    func designDocument() throws {
        let format = try AccessLogFormat(parsing: """
            [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" 
            %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% 
            %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" 
            "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" 
            "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER%

            """)
        #expect(format.render(record(), duration: 42) == "[2025-12-01T12:00:00.125Z] \"GET /reviews/0?x=1 HTTP/2\" 200 - 12 345 42 7 \"127.0.0.9\" \"curl/8\" \"abc\" \"reviews:9080\" \"127.0.2.10:9080\" outbound|9080|v2|reviews.default.svc.cluster.local;")
    }

    @Test("Absent values are '-', REQ(X?Y) falls back, :N truncates, %% is a percent sign; unknown operators are errors naming them")
    func operators() throws {
        var bare = HTTPRequestRecord()
        bare.method = "POST"
        let format = try AccessLogFormat(parsing: "%REQ(X-MISSING)% %REQ(X-ENVOY-ORIGINAL-PATH?:METHOD)% %REQ(:METHOD):2% 100%% %UPSTREAM_HOST% %ROUTE_NAME% %RESPONSE_CODE%")
        #expect(format.render(bare, duration: 0) == "- POST PO 100% - - 0")
        #expect(throws: AccessLogFormat.ParseError.self) { try AccessLogFormat(parsing: "%NOT_AN_OPERATOR%") }
        #expect(throws: AccessLogFormat.ParseError.self) { try AccessLogFormat(parsing: "%REQ(X)") }
        do { _ = try AccessLogFormat(parsing: "x %BOGUS% y") } catch { #expect(error.description.hasPrefix("unknown command operator '%BOGUS%'")) }
    }
}

extension AccessLogFormatTests {
    @Test("accessLogEncoding JSON: Istio's keys, numbers as numbers, absent values null, strings escaped")
    func json() throws {
        var entry = record()
        entry.requestHeaders.replaceOrAdd(name: "user-agent", value: "curl \"8\"\n")
        let line = AccessLogFormat.configured(format: nil, encoding: .json).render(entry, duration: 42)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
        #expect(object["method"] as? String == "GET")
        #expect(object["response_code"] as? Int == 200 && object["duration"] as? Int == 42 && object["upstream_service_time"] as? Int == 7)
        #expect(object["user_agent"] as? String == "curl \"8\"\n")
        #expect(object["upstream_cluster"] as? String == "outbound|9080|v2|reviews.default.svc.cluster.local")
        #expect(object["route_name"] is NSNull && object["upstream_local_address"] is NSNull)
        #expect(line.hasPrefix("{\"start_time\":\"2025-12-01T12:00:00.125Z\",\"method\":\"GET\""))
    }
}
