import Crypto
import Foundation
import Testing
@testable import MeshProxyCore

/// AuthorizationPolicy at the gateways, against the original client: east's clients reach
/// reviews v2 in west through both gateways, and west's gateway — the only one with the ALLOW
/// policy — judges them by the identity east carried in x-forwarded-client-cert.
@Suite("AuthorizationPolicy at the gateways (processes on loopback)", .serialized, .sharesMachine)
struct AuthorizationTests {
    static let routes = HTTPRoutingTests.reviewsRoutes + """
          - route: [{destination: {host: reviews, subset: v2}}]
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: no-admin, namespace: istio-system}
        spec:
          selector: {matchLabels: {istio: eastwestgateway}}
          action: DENY
          rules:
          - to: [{operation: {paths: ["/admin*"]}}]
        """

    static let westOnly = """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: reviews-v2-readers, namespace: default}
        spec:
          selector: {matchLabels: {version: v2}}
          action: ALLOW
          rules:
          - from: [{source: {principals: [cluster.local/ns/default/sa/client]}}]
            to: [{operation: {methods: [GET], paths: ["/reviews/*"]}}]
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata:
          name: would-deny-everything
          namespace: default
          annotations: {istio.io/dry-run: "true"}
        spec:
          selector: {matchLabels: {version: v2}}
          action: DENY
          rules: [{}]
        """

    @Test("An allowed principal of east reaches reviews v2 in west; another client of east, a POST or another path is refused by west's gateway with 403 'RBAC: access denied'; a forged x-forwarded-client-cert is judged by its sender's own identity; a gateway-wide DENY refuses at east; a dry-run policy only logs")
    func originalPrincipal() async throws {
        let mesh = try await HTTPRoutingTests.start("authz", block: 117, virtualService: Self.routes, westPolicies: Self.westOnly)
        defer { mesh.mesh.processes.stopAll() }
        let intruder = "\(mesh.mesh.certs.path)/east/intruder"
        _ = try mesh.mesh.certs.createWorkload(cluster: "east", spiffeID: try SpiffeID(parsing: "spiffe://cluster.local/ns/default/sa/intruder"),
                                               outputPath: intruder)
        func get(_ gateway: GatewayConfig, _ path: String, client: String? = nil, extra: [String] = []) async throws -> (code: String, body: String) {
            let result = try await mesh.mesh.curl(gateway, host: HTTPRoutingTests.reviews, path: path, client: client, extra: extra + ["-w", "\n%{http_code}"])
            let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            return (String(lines.last ?? ""), lines.dropLast().joined(separator: "\n"))
        }
        let allowed = try await get(mesh.east, "/reviews/1")
        #expect(allowed.code == "200" && allowed.body.contains("\"version\":\"v2\""), "\(allowed)")
        #expect(try await get(mesh.east, "/reviews/1", client: intruder) == ("403", "RBAC: access denied"))
        #expect(try await get(mesh.east, "/reviews/1", extra: ["-X", "POST"]) == ("403", "RBAC: access denied"))
        #expect(try await get(mesh.east, "/ratings/1") == ("403", "RBAC: access denied"))
        // Straight to west's gateway with a forged header naming the allowed client: the header
        // is the gateway's to set, and the sender is a workload, not a gateway.
        let forged = try await get(mesh.west, "/reviews/1", client: intruder,
                                   extra: ["-H", "x-forwarded-client-cert: By=spiffe://cluster.local/ns/istio-system/sa/eastwest-gateway-east;URI=spiffe://cluster.local/ns/default/sa/client"])
        #expect(forged == ("403", "RBAC: access denied"))
        // The gateway-wide DENY is in both gateways' policies: east refuses before forwarding.
        #expect(try await get(mesh.east, "/admin/users") == ("403", "RBAC: access denied"))

        let west = try #require(mesh.mesh.processes.children.first { $0.name == "west-gw" })
        let east = try #require(mesh.mesh.processes.children.first { $0.name == "east-gw" })
        let logged = await eventually(timeout: .seconds(5)) {
            west.log.contains("rbac_access_denied_matched_policy[none]: spiffe://cluster.local/ns/default/sa/intruder GET /reviews/1")
                && east.log.contains("rbac_access_denied_matched_policy[ns[istio-system]-policy[no-admin]-rule[0]]")
        }
        #expect(logged, "west: \(west.log.suffix(2500))\neast: \(east.log.suffix(1500))")
        // The dry-run DENY decided every request aside and refused none of them.
        #expect(west.log.contains("ns[default]-policy[would-deny-everything]: denied"), "\(west.log.suffix(1500))")
        // east forwarded the intruder's request and passed west's refusal on: it is west's 403.
        #expect(!east.log.contains("rbac_access_denied_matched_policy[none]"))
    }

    @Test("RequestAuthentication at west's gateway: east's client with a token for alice is allowed, without a token 403 (requestPrincipals required), an expired token 401 'Jwt is expired' with www-authenticate, bob's token 403")
    func jwtAcrossGateways() async throws {
        let key = P256.Signing.PrivateKey()
        let b64 = JWT.base64URLEncoded
        func token(sub: String, exp: TimeInterval) -> String {
            let header = b64(Data(#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#.utf8))
            let claims = b64(Data(#"{"iss":"https://auth.mcp.example.com","sub":"\#(sub)","exp":\#(Int(Date().timeIntervalSince1970 + exp))}"#.utf8))
            let signature = try! key.signature(for: SHA256.hash(data: Data("\(header).\(claims)".utf8))).rawRepresentation
            return "\(header).\(claims).\(b64(signature))"
        }
        let point = key.publicKey.rawRepresentation
        let jwks = #"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"\#(b64(point.prefix(32)))","y":"\#(b64(point.suffix(32)))"}]}"#
        let westOnly = """
            apiVersion: security.istio.io/v1
            kind: RequestAuthentication
            metadata: {name: mcp-jwt, namespace: default}
            spec:
              selector: {matchLabels: {version: v2}}
              jwtRules:
              - issuer: https://auth.mcp.example.com
                jwks: '\(jwks)'
            ---
            apiVersion: security.istio.io/v1
            kind: AuthorizationPolicy
            metadata: {name: alice-only, namespace: default}
            spec:
              selector: {matchLabels: {version: v2}}
              rules:
              - from: [{source: {requestPrincipals: [https://auth.mcp.example.com/alice]}}]
            """
        let mesh = try await HTTPRoutingTests.start("authz-jwt", block: 121, virtualService: HTTPRoutingTests.reviewsRoutes + """
              - route: [{destination: {host: reviews, subset: v2}}]
            """, westPolicies: westOnly)
        defer { mesh.mesh.processes.stopAll() }
        func get(_ bearer: String?) async throws -> (code: String, body: String) {
            let extra = bearer.map { ["-H", "authorization: Bearer \($0)"] } ?? []
            let result = try await mesh.mesh.curl(mesh.east, host: HTTPRoutingTests.reviews, path: "/reviews/1", extra: extra + ["-w", "\n%{http_code}"])
            let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            return (String(lines.last ?? ""), lines.dropLast().joined(separator: "\n"))
        }
        let alice = try await get(token(sub: "alice", exp: 600))
        #expect(alice.code == "200" && alice.body.contains("\"version\":\"v2\""), "\(alice)")
        // The token was for the gateway: the backend did not get it.
        #expect(!alice.body.lowercased().contains("\"authorization\""), "\(alice.body)")
        #expect(try await get(nil) == ("403", "RBAC: access denied"))
        #expect(try await get(token(sub: "bob", exp: 600)) == ("403", "RBAC: access denied"))
        #expect(try await get(token(sub: "alice", exp: -600)) == ("401", "Jwt is expired"))
        let headers = try await mesh.mesh.curl(mesh.east, host: HTTPRoutingTests.reviews, path: "/reviews/1",
                                               extra: ["-H", "authorization: Bearer \(token(sub: "alice", exp: -600))", "-D", "-", "-o", "/dev/null"])
        #expect(headers.stdout.lowercased().contains("www-authenticate: bearer realm="), "\(headers.stdout)")
    }

    @Test("TCP: west's gateway judges the client east's gateway vouches for in its original-client preamble — east's client allowed, another client of east refused after the handshake; a workload that sends a preamble itself is judged by its own certificate")
    func tcpOriginalClient() async throws {
        let mesh = try TestMesh("authz-tcp", clusters: ["east", "west"])
        defer { mesh.processes.stopAll() }
        let ratingsHost = "ratings.default.svc.cluster.local"
        try await mesh.startBackend("127.0.132.20:9080", service: ratingsHost, cluster: "west")
        let ratings = GatewayConfig.ServiceConfig.echo("127.0.132.20:9080", host: ratingsHost, port: 9080)
        var west = mesh.gatewayConfig(name: "west-gw", cluster: "west", ip: "127.0.132.1", services: [ratings])
        let east = mesh.eastGateway(ip: "127.0.131.1", reaching: west)
        let policy = "\(mesh.directory)/west-tcp-policy.yaml"
        try """
            apiVersion: security.istio.io/v1
            kind: AuthorizationPolicy
            metadata: {name: ratings-clients, namespace: default}
            spec:
              action: ALLOW
              rules:
              # remote.ip: the client's own address (curl's, 127.0.0.1), which east carries in
              # its preamble; east dials west from 127.0.131.1.
              - from: [{source: {principals: [cluster.local/ns/default/sa/client], remoteIpBlocks: [127.0.0.1/32]}}]
            """.write(toFile: policy, atomically: true, encoding: .utf8)
        west.policies = [policy]
        let westProcess = try await mesh.startGateway(west)
        try await mesh.startGateway(east)
        let intruder = "\(mesh.certs.path)/east/intruder"
        _ = try mesh.certs.createWorkload(cluster: "east", spiffeID: try SpiffeID(parsing: "spiffe://cluster.local/ns/default/sa/intruder"), outputPath: intruder)

        let allowed = try await mesh.curl(east, host: ratingsHost)
        #expect(mesh.answer(allowed)?["cluster"] == "west", "\(allowed.stderr) \(westProcess.log.suffix(1500))")
        let refused = try await mesh.curl(east, host: ratingsHost, client: intruder)
        #expect(mesh.answer(refused) == nil && refused.status != 0, "\(refused)")
        #expect(await eventually { westProcess.log.contains("rbac_access_denied_matched_policy[none]") && westProcess.log.contains("principal=spiffe://cluster.local/ns/default/sa/intruder") },
                "\(westProcess.log.suffix(2000))")

        // Straight to west, offering the gateways' ALPN and sending the line a gateway would.
        func direct(_ client: String, claiming principal: String) async throws -> String {
            let request = "EASTWEST/1 \(principal)\nGET / HTTP/1.0\r\nHost: \(ratingsHost)\r\n\r\n"
            return try await runCommand("/usr/bin/openssl", ["s_client", "-quiet", "-connect", "127.0.132.1:15443", "-servername", "outbound_.9080_._.\(ratingsHost)",
                                                             "-alpn", ClientHelloALPN.peerMarker, "-cert", "\(client)/cert-chain.pem", "-cert_chain", "\(client)/cert-chain.pem", "-key", "\(client)/key.pem",
                                                             "-CAfile", mesh.certs.rootCertificatePath], stdin: Data(request.utf8), timeout: 10).stdout
        }
        let forged = try await direct(intruder, claiming: "spiffe://cluster.local/ns/default/sa/client")
        #expect(!forged.contains("HTTP/1."), "a workload's preamble vouched for it: \(forged)")
        #expect(await eventually { westProcess.log.split(separator: "\n").contains { line in
                    line.contains(" 127.0.0.1:") && line.contains("principal=spiffe://cluster.local/ns/default/sa/intruder ") && line.contains("rbac_access_denied")
                } },
                "refused for its own identity, not for its chain: \(westProcess.log.suffix(1500))")
        let own = try await direct(mesh.clientCertPath("east"), claiming: "spiffe://cluster.local/ns/default/sa/intruder")
        #expect(own.contains("HTTP/1.") && own.contains("\"cluster\":\"west\""), "the allowed client, judged by its own certificate, with its bytes intact: \(own) \(westProcess.log.suffix(1500))")
    }

    @Test("TCP with a CUSTOM gRPC provider: east's gateway asks the ext-authz server in west (Envoy's network ext_authz: the connection's source and destination, no request) before the client's bytes go on; allowed by its principal the client reaches ratings, refused it is closed after the handshake (UAEX); west does not ask again",
          .enabled(if: IstioTaskTests.hasGRPCAndProtobuf, "needs python3's grpcio and protobuf (.ci/run installs them from PyPI)"))
    func tcpExternalAuthorization() async throws {
        let mesh = try TestMesh("authz-tcp-grpc", clusters: ["east", "west"])
        defer { mesh.processes.stopAll() }
        let ratingsHost = "ratings.default.svc.cluster.local"
        try await mesh.startBackend("127.0.153.20:9080", service: ratingsHost, cluster: "west")
        let allow = "\(mesh.directory)/allowed-principal", checks = "\(mesh.directory)/checks.log"
        try "/sa/client".write(toFile: allow, atomically: true, encoding: .utf8)
        let server = try ChildProcess(name: "ext-authz-grpc", arguments: [
            "/usr/bin/env", "python3", "\(PackagePaths.root)/Tests/EastWestIntegrationTests/Support/ext_authz_grpc.py", "serve", "127.0.153.21:9000", checks, allow,
        ], logPath: "\(mesh.directory)/ext-authz.log")
        defer { server.stop() }
        let ratings = GatewayConfig.ServiceConfig.echo("127.0.153.20:9080", host: ratingsHost, port: 9080)
        let extAuthz = GatewayConfig.ServiceConfig(host: "ext-authz.foo.svc.cluster.local", port: 9000,
                                                   endpoints: [.init(address: HostPort(host: "127.0.153.21", port: 9000))], protocol: .grpc)
        let policy = "\(mesh.directory)/tcp-custom.yaml"
        try """
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: istio, namespace: istio-system}
            data:
              mesh: |-
                extensionProviders:
                - name: sample-ext-authz-grpc
                  envoyExtAuthzGrpc: {service: ext-authz.foo.svc.cluster.local, port: "9000"}
            ---
            apiVersion: security.istio.io/v1
            kind: AuthorizationPolicy
            metadata: {name: ratings-ext-authz, namespace: default}
            spec:
              action: CUSTOM
              provider: {name: sample-ext-authz-grpc}
              rules: [{to: [{operation: {ports: ["9080"]}}]}]
            """.write(toFile: policy, atomically: true, encoding: .utf8)
        var west = mesh.gatewayConfig(name: "west-gw", cluster: "west", ip: "127.0.153.1", services: [ratings, extAuthz])
        var east = mesh.eastGateway(ip: "127.0.152.1", reaching: west)
        west.policies = [policy]
        east.policies = [policy]
        let westProcess = try await mesh.startGateway(west)
        let eastProcess = try await mesh.startGateway(east)

        let allowed = await eventually(timeout: .seconds(20)) { mesh.answer((try? await mesh.curl(east, host: ratingsHost)) ?? .init(status: 1, stdout: "", stderr: ""))?["cluster"] == "west" }
        #expect(allowed, "\(eastProcess.log.suffix(2000))")
        let seen = try String(contentsOfFile: checks, encoding: .utf8).components(separatedBy: "\n----\n").filter { !$0.isEmpty }
        let first = seen.first ?? ""
        #expect(first.contains(#"principal: "spiffe://cluster.local/ns/default/sa/client""#) && first.contains(#"service: "ratings.default.svc.cluster.local""#)
                && first.contains(#"principal: "spiffe://cluster.local/ns/istio-system/sa/eastwest-gateway-east""#) && !first.contains("request {"), "\(first)")

        try "/sa/nobody".write(toFile: allow, atomically: true, encoding: .utf8)
        let refused = try await mesh.curl(east, host: ratingsHost)
        #expect(mesh.answer(refused) == nil && refused.status != 0, "\(refused)")
        #expect(await eventually { eastProcess.log.contains("ext_authz_denied") && eastProcess.log.contains("UAEX") }, "\(eastProcess.log.suffix(2000))")
        let checked = try String(contentsOfFile: checks, encoding: .utf8).components(separatedBy: "\n----\n").filter { !$0.isEmpty }.count
        #expect(checked == seen.count + 1, "one check per connection, at the entry gateway only (\(checked) checks)")
        #expect(!westProcess.log.contains("ext_authz"), "\(westProcess.log.suffix(1500))")
    }
}
