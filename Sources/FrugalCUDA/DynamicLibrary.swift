// DynamicLibrary: CUDA's libraries found and opened at run time, so Frugal builds without them.
import Foundation

/// A shared library opened with `dlopen`, and where it was found.
public final class DynamicLibrary: @unchecked Sendable {
    /// The path or name that opened.
    public let path: String
    private let handle: UnsafeMutableRawPointer

    /// Opens the first of `names` found in `folders` (then on the default loader path).
    /// - Returns: nil when none opens.
    public static func open(_ names: [String], folders: [String] = DynamicLibrary.searchFolders()) -> DynamicLibrary? {
        for name in names {
            for candidate in folders.map({ $0 + "/" + name }) + [name] {
                if let handle = dlopen(candidate, RTLD_NOW | RTLD_LOCAL) {
                    return DynamicLibrary(path: candidate, handle: handle)
                }
            }
        }
        return nil
    }

    private init(path: String, handle: UnsafeMutableRawPointer) {
        self.path = path
        self.handle = handle
    }

    /// The address of `symbol`, or nil when the library lacks it.
    public func symbol(_ name: String) -> UnsafeMutableRawPointer? { dlsym(handle, name) }

    /// Folders searched before the default loader path: `$CUDA_HOME/lib64`, `/usr/local/cuda/lib64`,
    /// and the `nvidia/*/lib` folders of Python's site-packages (where PyPI's CUDA wheels install).
    public static func searchFolders(environment: [String: String] = ProcessInfo.processInfo.environment) -> [String] {
        var folders = [String]()
        if let home = environment["CUDA_HOME"] ?? environment["CUDA_PATH"] { folders.append(home + "/lib64") }
        folders.append("/usr/local/cuda/lib64")
        return folders + wheelFolders("lib", environment: environment)
    }

    /// Folders that may hold the CUDA headers NVRTC needs (`cuda_fp16.h`, `cuda_bf16.h`):
    /// `$CUDA_HOME/include`, `/usr/local/cuda/include`, and the `nvidia/*/include` folders of the
    /// site-packages searched for libraries.
    public static func includeFolders(environment: [String: String] = ProcessInfo.processInfo.environment) -> [String] {
        var folders = [String]()
        if let home = environment["CUDA_HOME"] ?? environment["CUDA_PATH"] { folders.append(home + "/include") }
        folders.append("/usr/local/cuda/include")
        return folders + wheelFolders("include", environment: environment)
    }

    /// The folder `scripts/setup-nvrtc` installs PyPI's NVRTC wheels into:
    /// `$FRUGAL_SITE_PACKAGES`, else `${FRUGAL_CACHE:-~/.cache/frugal}/cuda-wheels`.
    public static func frugalSitePackages(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let extra = environment["FRUGAL_SITE_PACKAGES"] { return extra }
        return (environment["FRUGAL_CACHE"] ?? NSHomeDirectory() + "/.cache/frugal") + "/cuda-wheels"
    }

    /// `site/nvidia/*/<leaf>` for every site-packages folder: Frugal's own (`frugalSitePackages`),
    /// the system Pythons', the user's and the active virtual environment's.
    private static func wheelFolders(_ leaf: String, environment: [String: String]) -> [String] {
        var folders = [String]()
        let fm = FileManager.default
        var sitePackages = [frugalSitePackages(environment: environment)]
        if environment["FRUGAL_SITE_PACKAGES"] != nil {
            sitePackages.append((environment["FRUGAL_CACHE"] ?? NSHomeDirectory() + "/.cache/frugal") + "/cuda-wheels")
        }
        for prefix in ["/usr/local/lib", "/usr/lib", NSHomeDirectory() + "/.local/lib"] {
            for python in (try? fm.contentsOfDirectory(atPath: prefix))?.filter({ $0.hasPrefix("python3") }).sorted() ?? [] {
                sitePackages += [prefix + "/" + python + "/site-packages", prefix + "/" + python + "/dist-packages"]
            }
        }
        if let virtualEnv = environment["VIRTUAL_ENV"] {
            for python in (try? fm.contentsOfDirectory(atPath: virtualEnv + "/lib")) ?? [] {
                sitePackages.append(virtualEnv + "/lib/" + python + "/site-packages")
            }
        }
        for site in sitePackages {
            for package in ((try? fm.contentsOfDirectory(atPath: site + "/nvidia")) ?? []).sorted() {
                let folder = site + "/nvidia/" + package + "/" + leaf
                if !folders.contains(folder) { folders.append(folder) }
            }
        }
        return folders
    }
}
