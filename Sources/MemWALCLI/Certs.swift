import ArgumentParser
import MemWALServer

/// `memwal certs`: the cluster's certificates.
struct CertsCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "certs", abstract: "Make the cluster CA and the members' certificates.",
    subcommands: [CertsInit.self])
}

/// `memwal certs init --out DIR --nodes n1,n2,n3 [--controller] [--days N] [--force]`.
struct CertsInit: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "init",
    abstract: "Make a cluster CA and a key and certificate for each node (and the controller).",
    discussion: """
      Writes ca.pem, ca-key.pem, NAME.pem and NAME-key.pem (PEM; keys mode 0600) into the directory, \
      creating it. A directory that already has a CA keeps it: certificates are issued for the names \
      that have none, and no existing file is overwritten unless --force, which starts over with a new \
      CA. Keys never belong in version control.
      """)

  @Option(help: "Directory for the certificates and keys (created if missing).")
  var out: String

  @Option(help: "Comma-separated node names, e.g. n1,n2,n3 (lowercase letters, digits, '-').")
  var nodes: String

  @Flag(help: "Also issue a certificate for the controller (named \(ClusterCertificates.controllerName)).")
  var controller = false

  @Option(help: "Validity of the issued certificates, in days (the CA's is 10 years).")
  var days = ClusterCertificates.defaultValidityDays

  @Flag(help: "Overwrite existing files: a new CA and new certificates for every name given.")
  var force = false

  func run() throws {
    var names = nodes.split(separator: ",", omittingEmptySubsequences: false).map {
      String($0).trimmingWhitespace
    }
    if controller { names.append(ClusterCertificates.controllerName) }
    let report: ClusterCertificates.Report
    do {
      report = try ClusterCertificates.initialize(
        directory: out, names: names, validityDays: days, replacingExisting: force)
    } catch {
      warn("error: \(error)")
      throw ExitCode(1)
    }
    if report.reusedAuthority {
      emit("memwal certs: using the existing CA in \(out)")
    }
    for file in report.written { emit("wrote \(out)/\(file)") }
    for file in report.kept { emit("kept \(out)/\(file) (exists; --force replaces everything)") }
    if report.written.isEmpty { emit("memwal certs: nothing to do, every name has its certificate") }
  }
}

extension String {
  fileprivate var trimmingWhitespace: String {
    String(drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
  }
}
