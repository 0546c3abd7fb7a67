import Crypto
import CryptoExtras
import Foundation
@testable import MeshProxyCore
import Testing

/// Istio's security and rate-limit task pages, their YAML pasted as users paste it
/// (Tests/Fixtures/istio-tasks), through `eastwest up`: a client in east calls Bookinfo's
/// services and httpbin in west, with the identities the tasks use, and gets the answers the
/// task pages print.
@Suite("Istio's task pages through eastwest up", .serialized, .timeLimit(.minutes(4)), .sharesMachine)
struct IstioTaskTests {
    static let fixtures = "\(PackagePaths.root)/Tests/Fixtures/istio-tasks"

    struct Client: Decodable {
        var certificateChain: String, privateKey: String, rootCertificate: String
        var spiffeID: String?
    }

    /// One request through east's gateway: the status, the body and the response headers.
    static func call(_ client: Client, _ host: String, port: Int, path: String, method: String = "GET", headers: [String] = [],
                     gateway: String = "127.0.125.1", extra: [String] = []) async throws -> (code: String, body: String, headers: String) {
        let dir = try TemporaryDirectory("task-call")
        defer { dir.cleanUp() }
        var arguments = ["-sS", "--max-time", "10", "--cacert", client.rootCertificate, "--cert", client.certificateChain, "--key", client.privateKey,
                         "--resolve", "\(host):15443:\(gateway)", "-X", method, "-D", "\(dir.path)/headers", "-w", "\n%{http_code}"]
        arguments += headers.flatMap { ["-H", $0] } + extra
        arguments.append("https://\(host):15443\(path)")
        let result = try await runCommand("/usr/bin/curl", arguments)
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        let received = (try? String(contentsOfFile: "\(dir.path)/headers", encoding: .utf8)) ?? ""
        return (String(lines.last ?? ""), lines.dropLast().joined(separator: "\n"), received.lowercased())
    }

    @Test("authz-http, authz-deny and the local rate-limit task: validate reports nothing skipped; through up every request gets the task page's status")
    func authorizationAndRateLimitTasks() async throws {
        let files = ["authz-http", "authz-deny", "local-rate-limit"].map { "\(Self.fixtures)/\($0).yaml" }
        let validate = try await runCommand(PackagePaths.eastwest, ["validate"] + files)
        #expect(validate.status == 0, "\(validate.stderr)")
        #expect(!validate.stderr.contains("skipped") && !validate.stderr.contains("warning"), "\(validate.stderr)")

        let dir = try TemporaryDirectory("istio-tasks")
        defer { dir.cleanUp() }
        let topology = "\(dir.path)/topology.yaml"
        func service(_ host: String, _ port: Int, _ app: String, _ address: String) -> String {
            """
                  - host: \(host)
                    port: \(port)
                    protocol: http
                    endpoints: [{address: "\(address):\(port)", locality: us-west1/us-west1-a, labels: {app: \(app)}}]
            """
        }
        try """
            name: istio-tasks
            policies: [\(files.joined(separator: ", "))]
            clusters:
            - name: east
              gateways: [{name: task-east-gw, address: 127.0.125.1, locality: us-east1/us-east1-a}]
            - name: west
              gateways: [{name: task-west-gw, address: 127.0.126.1, locality: us-west1/us-west1-a}]
              services:
            \(service("productpage.default.svc.cluster.local", 9080, "productpage", "127.0.126.10"))
            \(service("details.default.svc.cluster.local", 9080, "details", "127.0.126.11"))
            \(service("reviews.default.svc.cluster.local", 9080, "reviews", "127.0.126.12"))
            \(service("ratings.default.svc.cluster.local", 9080, "ratings", "127.0.126.13"))
            \(service("httpbin.foo.svc.cluster.local", 8000, "httpbin", "127.0.126.14"))
            """.write(toFile: topology, atomically: true, encoding: .utf8)
        let (up, state) = try await startUp(topology, in: dir)
        defer { up.stop() }

        // Bookinfo's service accounts, issued by the deployment's own CA for clients in east.
        func identity(_ account: String) async throws -> Client {
            let out = "\(dir.path)/\(account)"
            let issued = try await runCommand(PackagePaths.eastwest, ["ca", "workload", "--dir", "\(state)/certs", "--cluster", "east",
                                                                      "--spiffe", "spiffe://cluster.local/ns/default/sa/\(account)", "--out", out])
            try #require(issued.status == 0, "\(issued.stderr)")
            return Client(certificateChain: "\(out)/cert-chain.pem", privateKey: "\(out)/key.pem", rootCertificate: "\(out)/root-cert.pem")
        }
        let sleep = try await identity("sleep"), productpage = try await identity("bookinfo-productpage"), reviews = try await identity("bookinfo-reviews")
        let page = "productpage.default.svc.cluster.local", httpbin = "httpbin.foo.svc.cluster.local"
        // West's endpoints reach east by gossip: wait for the first answer that is not "no route".
        #expect(await eventually(timeout: .seconds(30)) { (try? await Self.call(sleep, httpbin, port: 8000, path: "/ip", headers: ["x-token: admin"]).code) == "200" },
                "\(up.log.suffix(3000))")

        // Rate-limit task: productpage's inbound limit, 4 tokens a minute, x-local-rate-limit on refusals.
        var codes: [String] = []
        for _ in 0..<5 { codes.append(try await Self.call(sleep, page, port: 9080, path: "/productpage").code) }
        #expect(codes == ["200", "200", "200", "200", "429"])
        let limited = try await Self.call(sleep, page, port: 9080, path: "/productpage")
        #expect(limited.code == "429" && limited.body == "local_rate_limited" && limited.headers.contains("x-local-rate-limit: true"), "\(limited)")

        // authz-http: allow-nothing, then GET to productpage for anyone; details and reviews
        // for productpage's account; ratings for reviews' account.
        let post = try await Self.call(sleep, page, port: 9080, path: "/productpage", method: "POST")
        #expect(post.code == "403" && post.body == "RBAC: access denied", "\(post)")
        let details = "details.default.svc.cluster.local", reviewsHost = "reviews.default.svc.cluster.local", ratings = "ratings.default.svc.cluster.local"
        #expect(try await Self.call(productpage, details, port: 9080, path: "/details/0").code == "200")
        #expect(try await Self.call(sleep, details, port: 9080, path: "/details/0").code == "403")
        #expect(try await Self.call(productpage, details, port: 9080, path: "/details/0", method: "POST").code == "403")
        #expect(try await Self.call(productpage, reviewsHost, port: 9080, path: "/reviews/0").code == "200")
        #expect(try await Self.call(reviews, reviewsHost, port: 9080, path: "/reviews/0").code == "403")
        #expect(try await Self.call(reviews, ratings, port: 9080, path: "/ratings/0").code == "200")
        #expect(try await Self.call(productpage, ratings, port: 9080, path: "/ratings/0").code == "403")

        // authz-deny as the task leaves it: GET denied unless x-token is admin; only /ip allowed.
        #expect(try await Self.call(sleep, httpbin, port: 8000, path: "/ip", headers: ["x-token: guest"]).code == "403")
        #expect(try await Self.call(sleep, httpbin, port: 8000, path: "/ip", headers: ["x-token: admin"]).code == "200")
        #expect(try await Self.call(sleep, httpbin, port: 8000, path: "/get", headers: ["x-token: admin"]).code == "403")
    }

    @Test("authz-jwt: its jwksUri fetched over https (here from a server the test runs, with its own CA): before the JWKS is there every token is refused (fail closed), then an invalid token 401, none 403, the demo token 403 (no groups), the groups token 200")
    func jwtTask() async throws {
        let dir = try TemporaryDirectory("istio-task-jwt")
        defer { dir.cleanUp() }
        let state = "\(dir.path)/state", certs = "\(dir.path)/state/certs"
        func eastwest(_ arguments: String...) async throws {
            let result = try await runCommand(PackagePaths.eastwest, arguments)
            try #require(result.status == 0, "eastwest \(arguments.joined(separator: " ")): \(result.stderr)")
        }
        // The issuer's server has a certificate for localhost from a CA of its own making.
        try await eastwest("ca", "init", "--dir", certs)
        try await eastwest("ca", "cluster", "--dir", certs, "--cluster", "issuer")
        try await eastwest("ca", "workload", "--dir", certs, "--cluster", "issuer", "--spiffe", "spiffe://cluster.local/ns/auth/sa/issuer",
                           "--dns", "localhost", "--out", "\(dir.path)/issuer")

        // Tokens like the task's demo.jwt and groups-scope.jwt, signed RS256 by a key made here.
        let key = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        let b64 = JWT.base64URLEncoded
        func token(_ claims: String) throws -> String {
            let signed = "\(b64(Data(#"{"alg":"RS256","kid":"task-key","typ":"JWT"}"#.utf8))).\(b64(Data(claims.utf8)))"
            let signature = try key.signature(for: SHA256.hash(data: Data(signed.utf8)), padding: .insecurePKCS1v1_5)
            return "\(signed).\(b64(signature.rawRepresentation))"
        }
        let demo = try token(#"{"exp":4685989700,"foo":"bar","iat":1532389700,"iss":"testing@secure.istio.io","sub":"testing@secure.istio.io"}"#)
        let groups = try token(#"{"exp":3537391104,"groups":["group1","group2"],"iat":1537391104,"iss":"testing@secure.istio.io","scope":["scope1","scope2"],"sub":"testing@secure.istio.io"}"#)
        let primitives = try key.publicKey.getKeyPrimitives()
        try FileManager.default.createDirectory(atPath: "\(dir.path)/www", withIntermediateDirectories: true)
        try #"{"keys":[{"kty":"RSA","alg":"RS256","use":"sig","kid":"task-key","n":"\#(b64(primitives.modulus))","e":"\#(b64(primitives.publicExponent))"}]}"#
            .write(toFile: "\(dir.path)/www/jwks.json", atomically: true, encoding: .utf8)

        // A free port for the issuer, named in the task's file in place of GitHub's address.
        let port = try await runCommand("/usr/bin/python3", ["-c", "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"])
            .stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let task = try String(contentsOfFile: "\(Self.fixtures)/authz-jwt.yaml", encoding: .utf8)
            .replacingOccurrences(of: "https://raw.githubusercontent.com/istio/istio/release-1.8/security/tools/jwt/samples/jwks.json",
                                  with: "https://localhost:\(port)/jwks.json")
        try task.write(toFile: "\(dir.path)/authz-jwt.yaml", atomically: true, encoding: .utf8)
        let validate = try await runCommand(PackagePaths.eastwest, ["validate", "\(Self.fixtures)/authz-jwt.yaml"])
        #expect(validate.status == 0 && !validate.stderr.contains("skipped") && !validate.stderr.contains("warning"), "\(validate.stderr)")

        let topology = "\(dir.path)/topology.yaml"
        try """
            name: istio-task-jwt
            policies: [\(dir.path)/authz-jwt.yaml]
            jwksCACertificates: \(certs)/root-cert.pem
            clusters:
            - name: east
              gateways: [{name: jwt-east-gw, address: 127.0.127.1, locality: us-east1/us-east1-a}]
            - name: west
              gateways: [{name: jwt-west-gw, address: 127.0.128.1, locality: us-west1/us-west1-a}]
              services:
              - host: httpbin.foo.svc.cluster.local
                port: 8000
                protocol: http
                endpoints: [{address: "127.0.128.10:8000", locality: us-west1/us-west1-a, labels: {app: httpbin}}]
            """.write(toFile: topology, atomically: true, encoding: .utf8)
        let (up, _) = try await startUp(topology, in: dir)
        defer { up.stop() }
        struct Ready: Decodable { var clients: [String: Client] }
        let ready = try JSONDecoder().decode(Ready.self, from: try Data(contentsOf: URL(fileURLWithPath: "\(state)/ready.json")))
        let sleep = try #require(ready.clients["east"])
        let httpbin = "httpbin.foo.svc.cluster.local"
        func call(_ headers: [String] = []) async throws -> (code: String, body: String, headers: String) {
            try await Self.call(sleep, httpbin, port: 8000, path: "/headers", headers: headers, gateway: "127.0.127.1")
        }
        // No JWKS yet (the issuer is not up): the token cannot be verified, and is refused.
        let early = await eventually(timeout: .seconds(30)) { (try? await call(["Authorization: Bearer \(groups)"]).code) == "401" }
        #expect(early, "\(up.log.suffix(3000))")
        #expect(try await call(["Authorization: Bearer \(groups)"]).body == "Jwks doesn't have key to match kid or alg from Jwt")

        let issuer = try ChildProcess(name: "issuer", arguments: ["/usr/bin/python3", "-c", """
            import http.server, ssl, functools
            handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory="\(dir.path)/www")
            server = http.server.HTTPServer(("127.0.0.1", \(port)), handler)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain("\(dir.path)/issuer/cert-chain.pem", "\(dir.path)/issuer/key.pem")
            server.socket = context.wrap_socket(server.socket, server_side=True)
            server.serve_forever()
            """], logPath: "\(dir.path)/issuer.log")
        defer { issuer.stop() }
        // The gateways try again after 1 s, 2 s, 4 s…: the keys arrive within seconds.
        let fetched = await eventually(timeout: .seconds(40)) { (try? await call(["Authorization: Bearer \(groups)"]).code) == "200" }
        #expect(fetched, "issuer: \(issuer.log.suffix(1500)) up: \(up.log.suffix(2000))")
        #expect(try await call(["Authorization: Bearer invalidToken"]).code == "401")
        #expect(try await call().code == "403")
        #expect(try await call(["Authorization: Bearer \(demo)"]).code == "403")
        #expect(try await call(["Authorization: Bearer \(groups)"]).code == "200")
    }

    /// Istio's sample ext-authz HTTP server (samples/extauthz/src/main.go): allows a request with
    /// `x-ext-authz: allow`, else 403 with its deny body; says what it received in
    /// `x-ext-authz-check-received`, and its verdict in `x-ext-authz-check-result`.
    static func extAuthzServer(_ address: String, port: Int, log: String) throws -> ChildProcess {
        try ChildProcess(name: "ext-authz", arguments: ["/usr/bin/python3", "-c", """
            import http.server
            class Handler(http.server.BaseHTTPRequestHandler):
                protocol_version = "HTTP/1.1"
                def handle_one_request(self):
                    return super().handle_one_request()
                def answer(self):
                    length = int(self.headers.get("content-length") or 0)
                    body = self.rfile.read(length) if length else b""
                    received = "%s %s%s, headers: %s, body: [%s]" % (self.command, self.headers.get("host"), self.path,
                        sorted(k.lower() for k in self.headers.keys()), body.decode())
                    allowed = self.headers.get("x-ext-authz") == "allow"
                    deny = b"denied by ext_authz for not found header `x-ext-authz: allow` in the request"
                    self.send_response(200 if allowed else 403)
                    self.send_header("x-ext-authz-check-result", "allowed" if allowed else "denied")
                    self.send_header("x-ext-authz-check-received", received)
                    self.send_header("content-length", "0" if allowed else str(len(deny)))
                    self.end_headers()
                    if not allowed: self.wfile.write(deny)
                do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = answer
            http.server.ThreadingHTTPServer(("\(address)", \(port)), Handler).serve_forever()
            """], logPath: log)
    }

    /// The task's two clusters: the client in east (block `east`), httpbin and the ext-authz
    /// service (the task deploys both in foo, here as a ServiceEntry with `port`) in west.
    static func extAuthzTopology(in dir: TemporaryDirectory, name: String, task: String, block: (east: Int, west: Int),
                                 gateways: (east: String, west: String), port: String) throws -> String {
        try """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: ext-authz, namespace: foo}
            spec:
              hosts: [ext-authz.foo.svc.cluster.local]
              ports: [\(port)]
              location: MESH_INTERNAL
              resolution: STATIC
              endpoints: [{address: 127.0.\(block.west).20, labels: {app: ext-authz, topology.istio.io/cluster: west}, locality: us-west1/us-west1-a}]
            """.write(toFile: "\(dir.path)/ext-authz-service.yaml", atomically: true, encoding: .utf8)
        let topology = "\(dir.path)/topology.yaml"
        try """
            name: \(name)
            policies: [\(task), \(dir.path)/ext-authz-service.yaml]
            clusters:
            - name: east
              gateways: [{name: \(gateways.east), address: 127.0.\(block.east).1, locality: us-east1/us-east1-a}]
            - name: west
              gateways: [{name: \(gateways.west), address: 127.0.\(block.west).1, locality: us-west1/us-west1-a}]
              services:
              - host: httpbin.foo.svc.cluster.local
                port: 8000
                protocol: http
                endpoints: [{address: "127.0.\(block.west).14:8000", locality: us-west1/us-west1-a, labels: {app: httpbin}}]
            """.write(toFile: topology, atomically: true, encoding: .utf8)
        return topology
    }

    @Test("authz-custom: the task's mesh config (istio ConfigMap) and CUSTOM policy; the ext-authz server in west, asked by east's gateway over the pooled connection: x-ext-authz allow 200, deny 403 with the server's body and headers (UAEX), /ip not checked; the server down: 403 UAEX")
    func extAuthzTask() async throws {
        let dir = try TemporaryDirectory("istio-task-ext-authz")
        defer { dir.cleanUp() }
        let fixture = "\(Self.fixtures)/authz-custom.yaml"
        let validate = try await runCommand(PackagePaths.eastwest, ["validate", fixture])
        #expect(validate.status == 0 && !validate.stderr.contains("skipped"), "\(validate.stderr)")
        #expect(!validate.stderr.contains("warning"), "\(validate.stderr)")
        // The task's mesh config, with the body sent too (the first 16 bytes, the rest allowed on).
        let task = "\(dir.path)/authz-custom.yaml"
        try String(contentsOfFile: fixture, encoding: .utf8).replacingOccurrences(of: #"includeRequestHeadersInCheck: ["x-ext-authz"]"#, with: """
            includeRequestHeadersInCheck: ["x-ext-authz", "x-envoy-auth-partial-body"]
                    includeRequestBodyInCheck: {maxRequestBytes: 16, allowPartialMessage: true}
            """).write(toFile: task, atomically: true, encoding: .utf8)

        let topology = try Self.extAuthzTopology(in: dir, name: "istio-task-ext-authz", task: task, block: (147, 148), gateways: ("authz-east-gw", "authz-west-gw"),
                                                 port: "{number: 8000, name: http, protocol: HTTP}")
        var server: ChildProcess? = try Self.extAuthzServer("127.0.148.20", port: 8000, log: "\(dir.path)/ext-authz.log")
        defer { server?.stop() }
        let (up, state) = try await startUp(topology, in: dir)
        defer { up.stop() }
        struct Ready: Decodable { var clients: [String: Client] }
        let ready = try JSONDecoder().decode(Ready.self, from: try Data(contentsOf: URL(fileURLWithPath: "\(state)/ready.json")))
        let sleep = try #require(ready.clients["east"])
        let httpbin = "httpbin.foo.svc.cluster.local"
        func call(_ path: String, _ headers: [String], method: String = "GET", extra: [String] = []) async throws -> (code: String, body: String, headers: String) {
            try await Self.call(sleep, httpbin, port: 8000, path: path, method: method, headers: headers, gateway: "127.0.147.1", extra: extra)
        }
        // West's endpoints reach east by gossip.
        #expect(await eventually(timeout: .seconds(30)) { (try? await call("/headers", ["x-ext-authz: allow"]).code) == "200" }, "\(up.log.suffix(3000))")

        let denied = try await call("/headers", ["x-ext-authz: deny", "x-other: not-for-the-check"])
        #expect(denied.code == "403" && denied.body == "denied by ext_authz for not found header `x-ext-authz: allow` in the request", "\(denied)")
        #expect(denied.headers.contains("x-ext-authz-check-result: denied"), "\(denied.headers)")
        // What the server received: the client's method and path, the task's header and host, not the others.
        let received = denied.headers.split(whereSeparator: \.isNewline).first { $0.hasPrefix("x-ext-authz-check-received:") }.map(String.init) ?? ""
        #expect(received.contains("get httpbin.foo.svc.cluster.local:15443/headers") && received.contains("'x-ext-authz'") && !received.contains("x-other"),
                "\(denied.headers)")
        let allowed = try await call("/headers", ["x-ext-authz: allow"])
        #expect(allowed.code == "200" && allowed.body.contains(#""x-ext-authz":"allow""#), "\(allowed)")
        // A body that came while the server was asked follows the request (HTTP/2 and HTTP/1.1).
        for version in ["--http2", "--http1.1"] {
            let posted = try await call("/headers", ["x-ext-authz: allow"], method: "POST", extra: [version, "--data-binary", "twelve bytes"])
            #expect(posted.code == "200" && posted.body.contains(#""method":"POST""#) && posted.body.contains(#""content-length":"12""#), "\(version): \(posted)")
        }
        // includeRequestBodyInCheck with allowPartialMessage: the server is sent the first 16
        // bytes and told the body goes on; the backend gets all of it.
        let long = String(repeating: "0123456789", count: 4)
        let partial = try await call("/headers", ["x-ext-authz: deny"], method: "POST", extra: ["--data-binary", long])
        let partialCheck = partial.headers.split(whereSeparator: \.isNewline).first { $0.hasPrefix("x-ext-authz-check-received:") }.map(String.init) ?? ""
        #expect(partial.code == "403" && partialCheck.contains("body: [0123456789012345]") && partialCheck.contains("'x-envoy-auth-partial-body'"), "\(partial)")
        let whole = try await call("/headers", ["x-ext-authz: allow", "x-envoy-auth-partial-body: forged"], method: "POST", extra: ["--data-binary", long])
        #expect(whole.code == "200" && whole.body.contains(#""content-length":"40""#) && !whole.body.contains("forged"), "\(whole)")
        // The rule names /headers only: /ip is never sent to the server.
        #expect(try await call("/ip", ["x-ext-authz: deny"]).code == "200")

        try await Self.expectDenialCountedThenFailClosed(admin: "127.0.147.1", log: "\(state)/logs/authz-east-gw.log", denials: 2, stopServer: { server?.stop(); server = nil }) {
            try await call("/headers", ["x-ext-authz: allow"])
        }
        #expect(try await call("/ip", []).code == "200")
    }

    /// What both providers end with: the denials counted under Envoy's name and `UAEX` in the
    /// entry gateway's log; then, the server gone, Envoy's error path: `statusOnError` (403) with
    /// no body.
    static func expectDenialCountedThenFailClosed(admin: String, log: String, denials: Int = 1, stopServer: () -> Void,
                                                  call: @escaping () async throws -> (code: String, body: String, headers: String)) async throws {
        let stats = try await runCommand("/usr/bin/curl", ["-sS", "http://\(admin):15000/stats/prometheus"]).stdout
        #expect(stats.contains("envoy_cluster_ext_authz_denied{cluster_name=\"outbound|8000||httpbin.foo.svc.cluster.local\"} \(denials)"), "\(stats.suffix(2000))")
        let logged = try String(contentsOfFile: log, encoding: .utf8)
        #expect(logged.contains("UAEX"), "\(logged.suffix(2000))")
        stopServer()
        let failed = await eventually(timeout: .seconds(15)) {
            guard let answer = try? await call() else { return false }
            return answer.code == "403" && answer.body.isEmpty
        }
        #expect(failed)
    }

    static let hasGRPCAndProtobuf = (try? runCommandBlocking("/usr/bin/env", ["python3", "-c", "import grpc, google.protobuf"]))?.status == 0

    @Test("authz-custom with the task's gRPC provider: Authorization/Check over HTTP/2 to the server in west (read by the official protobuf runtime); allow 200 with its headers set and removed, deny 403 with its body (UAEX); the check names the client, the gateway and the request; server down: 403",
          .enabled(if: hasGRPCAndProtobuf, "needs python3's grpcio and protobuf (.ci/run installs them from PyPI)"))
    func extAuthzGRPCTask() async throws {
        let dir = try TemporaryDirectory("istio-task-ext-authz-grpc")
        defer { dir.cleanUp() }
        // The task's policy as the page has it: the gRPC provider.
        let task = "\(dir.path)/authz-custom-grpc.yaml"
        let text = try String(contentsOfFile: "\(Self.fixtures)/authz-custom.yaml", encoding: .utf8)
        #expect(text.contains("    name: sample-ext-authz-http\n"))
        // With the body in the check, up to 16 bytes (more is 413, as Envoy's buffer limit).
        try text.replacingOccurrences(of: "    name: sample-ext-authz-http\n", with: "    name: sample-ext-authz-grpc\n")
            .replacingOccurrences(of: #"port: "9000""#, with: #"port: "9000"\#n        includeRequestBodyInCheck: {maxRequestBytes: 16}"#)
            .write(toFile: task, atomically: true, encoding: .utf8)
        let validate = try await runCommand(PackagePaths.eastwest, ["validate", task])
        #expect(validate.status == 0 && !validate.stderr.contains("skipped") && !validate.stderr.contains("warning"), "\(validate.stderr)")
        let topology = try Self.extAuthzTopology(in: dir, name: "istio-task-ext-authz-grpc", task: task, block: (150, 151),
                                                 gateways: ("grpc-authz-east-gw", "grpc-authz-west-gw"), port: "{number: 9000, name: grpc, protocol: GRPC}")
        let checks = "\(dir.path)/checks.log"
        var server: ChildProcess? = try ChildProcess(name: "ext-authz-grpc", arguments: [
            "/usr/bin/env", "python3", "\(PackagePaths.root)/Tests/EastWestIntegrationTests/Support/ext_authz_grpc.py", "serve", "127.0.151.20:9000", checks,
        ], logPath: "\(dir.path)/ext-authz.log")
        defer { server?.stop() }
        let (up, state) = try await startUp(topology, in: dir)
        defer { up.stop() }
        struct Ready: Decodable { var clients: [String: Client] }
        let ready = try JSONDecoder().decode(Ready.self, from: try Data(contentsOf: URL(fileURLWithPath: "\(state)/ready.json")))
        let sleep = try #require(ready.clients["east"])
        let httpbin = "httpbin.foo.svc.cluster.local"
        func call(_ path: String, _ headers: [String], extra: [String] = []) async throws -> (code: String, body: String, headers: String) {
            try await Self.call(sleep, httpbin, port: 8000, path: path, headers: headers, gateway: "127.0.150.1", extra: extra)
        }
        #expect(await eventually(timeout: .seconds(30)) { (try? await call("/headers", ["x-ext-authz: allow"]).code) == "200" }, "\(up.log.suffix(3000))")

        let denied = try await call("/headers", ["x-ext-authz: deny"])
        #expect(denied.code == "403" && denied.body == "denied by ext_authz for not found header `x-ext-authz: allow` in the request", "\(denied)")
        #expect(denied.headers.contains("x-ext-authz-check-result: denied"), "\(denied.headers)")
        let allowed = try await call("/headers", ["x-ext-authz: allow", "x-remove-me: secret"], extra: ["--http1.1"])
        #expect(allowed.code == "200" && allowed.body.contains(#""x-ext-authz-check-result":"allowed""#) && !allowed.body.contains(#""x-remove-me":"#), "\(allowed)")
        #expect(allowed.headers.contains("x-ext-authz-response: seen"), "\(allowed.headers)")
        #expect(try await call("/ip", ["x-ext-authz: deny"]).code == "200", "the rule names /headers only")

        // What the server read with the protobuf runtime: the original client, the gateway, the request.
        let seen = try String(contentsOfFile: checks, encoding: .utf8)
        let last = seen.components(separatedBy: "\n----\n").dropLast().last ?? ""
        for part in [#"principal: "\#(sleep.spiffeID ?? "the client's")""#, #"principal: "spiffe://cluster.local/ns/istio-system/sa/eastwest-gateway-east""#,
                     #"method: "GET""#, #"path: "/headers""#, #"host: "httpbin.foo.svc.cluster.local:15443""#, #"protocol: "HTTP/1.1""#,
                     #"key: "x-ext-authz""#, #"value: "allow""#, #"key: ":method""#, #"address: "127.0.150.1""#, #"scheme: "https""#] {
            #expect(last.contains(part), "\(part) in \(last)")
        }
        let posted = try await call("/headers", ["x-ext-authz: allow"], extra: ["--data-binary", "twelve bytes"])
        #expect(posted.code == "200" && posted.body.contains(#""content-length":"12""#), "\(posted)")
        let postCheck = (try String(contentsOfFile: checks, encoding: .utf8)).components(separatedBy: "\n----\n").dropLast().last ?? ""
        #expect(postCheck.contains(#"body: "twelve bytes""#) && postCheck.contains("size: 12") && postCheck.contains(#"key: "x-envoy-auth-partial-body""#),
                "\(postCheck)")
        let tooLong = try await call("/headers", ["x-ext-authz: allow"], extra: ["--data-binary", String(repeating: "x", count: 40)])
        #expect(tooLong.code == "413" && tooLong.body == "Payload Too Large", "\(tooLong)")
        try await Self.expectDenialCountedThenFailClosed(admin: "127.0.150.1", log: "\(state)/logs/grpc-authz-east-gw.log", stopServer: { server?.stop(); server = nil }) {
            try await call("/headers", ["x-ext-authz: allow"])
        }
    }
}
