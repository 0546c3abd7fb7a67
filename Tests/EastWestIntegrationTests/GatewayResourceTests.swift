import Foundation
import MeshProxyCore
import Testing

/// Istio's Gateway resource on 15443: AUTO_PASSTHROUGH hands an Istio workload's own mTLS to the
/// endpoint (the backend, not the gateway, checks the client), ISTIO_MUTUAL servers terminate as
/// always, and hosts no server exposes are refused.
@Suite("Gateway resources on 15443 (openssl and curl on loopback)", .serialized, .timeLimit(.minutes(3)), .sharesMachine)
struct GatewayResourceTests {
    static let secure = "secure.default.svc.cluster.local"
    static let echo = "echo.default.svc.cluster.local"
    static let hidden = "hidden.shop.svc.cluster.local"

    @Test("expose-services.yaml: a client with Istio's SNI and ALPN reaches an openssl backend that verifies its certificate through the gateway; without a certificate the backend refuses it; an ISTIO_MUTUAL host is served; a host no server exposes gets NR")
    func passthrough() async throws {
        let mesh = try TestMesh("gw-resource", clusters: ["east"], serviceHosts: [Self.secure, Self.echo, Self.hidden])
        defer { mesh.processes.stopAll() }
        let backendCerts = "\(mesh.directory)/secure-backend"
        _ = try mesh.certs.createWorkload(cluster: "east", spiffeID: try SpiffeID(parsing: "spiffe://cluster.local/ns/default/sa/secure"),
                                          dnsNames: [Self.secure], outputPath: backendCerts)
        // The backend itself demands and verifies a client certificate (-Verify 1, fail without).
        let backend = try ChildProcess(name: "openssl-backend", arguments: [
            "/usr/bin/openssl", "s_server", "-accept", "127.0.95.10:8443", "-cert", "\(backendCerts)/cert-chain.pem",
            "-cert_chain", "\(backendCerts)/cert-chain.pem",
            "-key", "\(backendCerts)/key.pem", "-CAfile", mesh.certs.rootCertificatePath, "-Verify", "2", "-verify_return_error", "-www",
        ], logPath: "\(mesh.directory)/openssl-backend.log")
        defer { backend.stop() }
        try await mesh.startBackend("127.0.95.11:8080", cluster: "east")
        try await mesh.startBackend("127.0.95.12:8080", service: Self.hidden, cluster: "east")
        let policies = "\(mesh.directory)/gateway.yaml"
        try """
            apiVersion: networking.istio.io/v1
            kind: Gateway
            metadata: {name: cross-network-gateway, namespace: istio-system}
            spec:
              selector: {istio: eastwestgateway}
              servers:
              - port: {number: 15443, name: tls-echo, protocol: TLS}
                tls: {mode: ISTIO_MUTUAL}
                hosts: ["default/echo.default.svc.cluster.local"]
              - port: {number: 15443, name: tls, protocol: TLS}
                tls: {mode: AUTO_PASSTHROUGH}
                hosts: ["*/secure.default.svc.cluster.local"]
            """.write(toFile: policies, atomically: true, encoding: .utf8)
        var gateway = mesh.gatewayConfig(name: "east-gw", cluster: "east", ip: "127.0.95.1", services: [
            .echo("127.0.95.10:8443", host: Self.secure, port: 8443), .echo("127.0.95.11:8080"), .echo("127.0.95.12:8080", host: Self.hidden),
        ])
        gateway.policies = [policies]
        let process = try await mesh.startGateway(gateway)
        try #require(await eventually { (try? await runCommand("/usr/bin/env", ["ss", "-tlnH", "src", "127.0.95.10:8443"]))?.stdout.isEmpty == false },
                     "openssl backend did not listen: \(backend.log)")

        let client = mesh.clientCertPath("east")
        func sClient(certificate: Bool) async throws -> CommandResult {
            var arguments = ["s_client", "-connect", "127.0.95.1:15443", "-servername", "outbound_.8443_._.\(Self.secure)", "-alpn", "istio",
                             "-CAfile", mesh.certs.rootCertificatePath, "-ign_eof"]
            if certificate { arguments += ["-cert", "\(client)/cert-chain.pem", "-cert_chain", "\(client)/cert-chain.pem", "-key", "\(client)/key.pem"] }
            return try await runCommand("/usr/bin/openssl", arguments, stdin: Data("GET / HTTP/1.0\r\n\r\n".utf8), timeout: 10)
        }
        let through = try await sClient(certificate: true)
        // The certificate the client saw is the backend's: the gateway did not terminate.
        func firstCertificate(_ text: String) -> String? {
            guard let start = text.range(of: "-----BEGIN CERTIFICATE-----"), let end = text.range(of: "-----END CERTIFICATE-----", range: start.upperBound..<text.endIndex) else { return nil }
            return String(text[start.lowerBound..<end.upperBound])
        }
        let backendLeaf = try String(contentsOfFile: "\(backendCerts)/cert-chain.pem", encoding: .utf8)
        #expect(firstCertificate(through.stdout) != nil && firstCertificate(through.stdout) == firstCertificate(backendLeaf),
                "the client must see the backend's certificate: \(through.stdout.prefix(1500))")
        #expect(through.stdout.contains("Verify return code: 0 (ok)"), "\(through.stdout.suffix(600))")
        #expect(through.stdout.contains("HTTP/1.0 200 ok"), "\(through.stdout.suffix(1500)) \(through.stderr.suffix(500))")
        let refused = try await sClient(certificate: false)
        #expect(!refused.stdout.contains("HTTP/1.0 200 ok"), "the backend refuses a client without a certificate: \(refused.stdout.suffix(800))")

        // ISTIO_MUTUAL: terminated and served as always.
        let served = try await mesh.curl(gateway, host: Self.echo, extra: ["-w", "\n%{http_code}"])
        #expect(served.stdout.hasSuffix("\n200"), "\(served.stdout) \(served.stderr)")
        // A host no server exposes: refused before the handshake.
        let hiddenResult = try await mesh.curl(gateway, host: Self.hidden)
        #expect(hiddenResult.status != 0)
        #expect(await eventually(timeout: .seconds(5)) { process.log.contains("NR") && process.log.contains("no Gateway server on this port exposes \(Self.hidden)") },
                "\(process.log.suffix(2000))")
    }

    @Test("A peer EastWest gateway is still terminated on a gateway that passes *.local through: it offers its marker, so HTTP and TCP cross as before")
    func peersStayTerminated() async throws {
        let mesh = try TestMesh("gw-resource-peer", clusters: ["east", "west"], serviceHosts: [Self.echo, "reviews.default.svc.cluster.local"])
        defer { mesh.processes.stopAll() }
        try await mesh.startBackend("127.0.97.10:8080", cluster: "west")
        try await mesh.startBackend("127.0.97.11:9080", service: "reviews.default.svc.cluster.local", cluster: "west")
        let policies = "\(mesh.directory)/expose-services.yaml"
        // Istio's samples/multicluster/expose-services.yaml, as users paste it.
        try FileManager.default.copyItem(atPath: "\(PackagePaths.root)/Tests/Fixtures/multicluster/expose-services.yaml", toPath: policies)
        var reviews = GatewayConfig.ServiceConfig.echo("127.0.97.11:9080", host: "reviews.default.svc.cluster.local", port: 9080)
        reviews.protocol = .http
        let westServices: [GatewayConfig.ServiceConfig] = [.echo("127.0.97.10:8080"), reviews]
        var west = mesh.gatewayConfig(name: "west-gw", cluster: "west", ip: "127.0.97.1", services: westServices)
        west.policies = [policies]
        let east = mesh.gatewayConfig(name: "east-gw", cluster: "east", ip: "127.0.96.1", services: [],
                                      remotes: [.init(name: "west", gateways: [.init(name: "west-gw", address: HostPort(host: "127.0.97.1", port: 15443))],
                                                      services: westServices)])
        try await mesh.startGateway(west)
        try await mesh.startGateway(east)
        let tcp = try await mesh.curl(east, host: Self.echo)
        #expect(mesh.answer(tcp)?["cluster"] == "west", "\(tcp.stdout) \(tcp.stderr)")
        let http = try await mesh.curl(east, host: "reviews.default.svc.cluster.local", path: "/x")
        #expect(mesh.answer(http)?["path"] == "/x" && mesh.receivedHeaders(http)?["x-forwarded-client-cert"]?.contains("URI=spiffe://cluster.local/ns/default/sa/client") == true,
                "\(http.stdout) \(http.stderr)")
    }
}

/// ServiceEntry and WorkloadEntry in `policies:` declare a cluster's services; federation
/// carries them to the other clusters like any endpoint.
@Suite("ServiceEntry through federation (processes on loopback)", .serialized, .timeLimit(.minutes(3)), .sharesMachine)
struct ServiceEntryFederationTests {
    @Test("One policy file for both clusters: west's endpoints (cluster label west, one inline, one a WorkloadEntry) are west's; east learns them by gossip and curl in east reaches both through west's gateway")
    func serviceEntryAcrossClusters() async throws {
        let ratings = "ratings.default.svc.cluster.local"
        let mesh = try TestMesh("service-entry", clusters: ["east", "west"], serviceHosts: [ratings])
        defer { mesh.processes.stopAll() }
        try await mesh.startBackend("127.0.99.10:9080", service: ratings, cluster: "west")
        try await mesh.startBackend("127.0.99.11:9080", service: ratings, cluster: "west")
        let policies = "\(mesh.directory)/ratings-entries.yaml"
        try """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: ratings, namespace: default}
            spec:
              hosts: [\(ratings)]
              location: MESH_INTERNAL
              ports: [{number: 9080, name: tcp, protocol: TCP}]
              resolution: STATIC
              endpoints:
              - {address: 127.0.99.10, labels: {version: v1, topology.istio.io/cluster: west}}
            ---
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: ratings-vms, namespace: default}
            spec:
              hosts: [\(ratings)]
              ports: [{number: 9080, name: tcp, protocol: TCP}]
              resolution: STATIC
              workloadSelector: {labels: {app: ratings}}
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: ratings-vm-1, namespace: default}
            spec: {address: 127.0.99.11, labels: {app: ratings, version: v2, topology.istio.io/cluster: west}}
            """.write(toFile: policies, atomically: true, encoding: .utf8)
        var east = mesh.gatewayConfig(name: "east-gw", cluster: "east", ip: "127.0.98.1", services: [])
        var west = mesh.gatewayConfig(name: "west-gw", cluster: "west", ip: "127.0.99.1", services: [])
        east.policies = [policies]
        west.policies = [policies]
        east.federation = .init(seeds: [west.listen])
        west.federation = .init(seeds: [east.listen])
        try await mesh.startGateway(west)
        _ = try await mesh.startGateway(east)
        var seen: Set<String> = []
        let reached = await eventually(timeout: .seconds(15)) {
            for _ in 0..<6 {
                if let answer = mesh.answer((try? await mesh.curl(east, host: ratings)) ?? CommandResult(status: 1, stdout: "", stderr: "")),
                   answer["cluster"] == "west", let endpoint = answer["endpoint"] { seen.insert(endpoint) }
            }
            return seen.count == 2
        }
        #expect(reached, "reached \(seen)")
        // East never took west's endpoints for its own (it read the same file): every connection
        // went through west's gateway, none straight to an endpoint.
        let eastProcess = try #require(mesh.processes.children.first { $0.name == "east-gw" })
        #expect(eastProcess.log.contains("upstream_cluster=west") && !eastProcess.log.contains("upstream_cluster=east"), "\(eastProcess.log.suffix(1500))")
    }
}

/// VirtualService `tcp:` routes on a TCP service: the subset by weight, per connection.
@Suite("VirtualService tcp routes (curl on loopback)", .serialized, .timeLimit(.minutes(3)), .sharesMachine)
struct TCPRouteTests {
    @Test("tcp: a port match sends every connection to v2; a 50/50 split over 100 connections lands on both within a binomial tolerance; a tls: route for the server name comes before the tcp: routes; a server name no service has, under a wildcard tls: route, goes to that route's destination")
    func weightedSubsets() async throws {
        let host = "tcp-echo.default.svc.cluster.local"
        let mesh = try TestMesh("tcp-routes", clusters: ["east"], serviceHosts: [host, "api.partners.example.com", "api.other.example.com"])
        defer { mesh.processes.stopAll() }
        for (address, version) in [("127.0.102.10:9000", "v1"), ("127.0.102.11:9000", "v2")] {
            _ = try mesh.processes.start("backend-\(version)", ["demo-backend", "--listen", address, "--service", host, "--cluster", "east", "--version", version])
            try #require(await eventually { (try? await runCommand("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://\(address)/"]).stdout) == "200" })
        }
        func policies(_ routes: String) -> String {
            TestFiles.versionSubsets("tcp-echo", ["v1", "v2"]) + """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: tcp-echo}
            spec:
              hosts: [tcp-echo]
            \(routes)
            """
        }
        let service = GatewayConfig.ServiceConfig(host: host, port: 9000, endpoints: [
            Endpoint(address: HostPort(host: "127.0.102.10", port: 9000), labels: ["version": "v1"]),
            Endpoint(address: HostPort(host: "127.0.102.11", port: 9000), labels: ["version": "v2"]),
        ])
        func versions(_ routes: String, label: String, count: Int) async throws -> [String: Int] {
            let path = "\(mesh.directory)/\(label).yaml"
            try policies(routes).write(toFile: path, atomically: true, encoding: .utf8)
            var gateway = mesh.gatewayConfig(name: "gw-\(label)", cluster: "east", ip: "127.0.102.1", services: [service])
            gateway.policies = [path]
            let process = try await mesh.startGateway(gateway)
            defer { process.stop() }
            // A new connection per request (HTTP/1.0 closes after each), all from one curl so the
            // test costs the machine one process, not a hundred.
            let url = "https://\(host):\(gateway.listen.port)/"
            let result = try await mesh.curl(gateway, host: host, extra: ["--http1.0"] + Array(repeating: url, count: count - 1) + ["-w", "\n"])
            var counts: [String: Int] = [:]
            for line in result.stdout.split(separator: "\n") where line.hasPrefix("{") {
                let answer = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
                counts[answer?["version"] as? String ?? "?", default: 0] += 1
            }
            return counts
        }
        let all = try await versions("  tcp:\n  - match: [{port: 9000}]\n    route: [{destination: {host: tcp-echo, subset: v2}}]", label: "all-v2", count: 10)
        #expect(all == ["v2": 10], "\(all)")
        let split = try await versions("  tcp:\n  - route:\n    - {destination: {host: tcp-echo, subset: v1}, weight: 50}\n    - {destination: {host: tcp-echo, subset: v2}, weight: 50}",
                                       label: "split", count: 100)
        // Binomial(100, 0.5): 4 standard deviations is 20.
        #expect(split["v1", default: 0] + split["v2", default: 0] == 100 && (30...70).contains(split["v1", default: 0]), "\(split)")
        // The client connected with the service's name: its tls: route holds first.
        let tls = try await versions("  tls:\n  - match: [{sniHosts: [tcp-echo.default.svc.cluster.local], port: 9000}]\n    route: [{destination: {host: tcp-echo, subset: v1}}]\n"
                                     + "  tcp:\n  - route: [{destination: {host: tcp-echo, subset: v2}}]", label: "tls", count: 10)
        #expect(tls == ["v1": 10], "\(tls)")
        // A server name no service has, under a wildcard tls: route: the route's destination.
        let wildcard = """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: partners}
            spec:
              hosts: ["*.partners.example.com"]
              tls:
              - match: [{sniHosts: ["*.partners.example.com"], port: 9000}]
                route: [{destination: {host: tcp-echo, subset: v2}}]
            """
        let path = "\(mesh.directory)/wildcard.yaml"
        try (TestFiles.versionSubsets("tcp-echo", ["v1", "v2"]) + wildcard).write(toFile: path, atomically: true, encoding: .utf8)
        var gateway = mesh.gatewayConfig(name: "gw-wildcard", cluster: "east", ip: "127.0.102.1", services: [service])
        gateway.policies = [path]
        let process = try await mesh.startGateway(gateway)
        defer { process.stop() }
        let partner = "api.partners.example.com"
        let answer = try await mesh.curl(gateway, host: partner, extra: ["--http1.0"])
        #expect(answer.stdout.contains(#""version":"v2""#), "\(answer.stdout) \(answer.stderr) \(process.log.suffix(1500))")
        let unknown = try await mesh.curl(gateway, host: "api.other.example.com", extra: ["--http1.0"])
        #expect(unknown.status != 0, "a name neither a service nor a tls: route covers is refused: \(unknown.stdout)")
    }
}

