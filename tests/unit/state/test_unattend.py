from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from peagent.state.model import DomainJoin, Interface, MachineState, Secret
from peagent.state.password import decode_password
from peagent.state.unattend import OOBE_WINDOWS_7, unattend_summary, unattend_xml

NS = "{urn:schemas-microsoft-com:unattend}"
WCM = "{http://schemas.microsoft.com/WMIConfig/2002/State}"

RICH = MachineState(
    computer_name="WS-0042", organization="Example Corp", owner="IT",
    product_key=Secret("XXXXX-XXXXX-XXXXX-XXXXX-XXXXX"), admin_password=Secret("P@ssw0rd!"),
    timezone="Europe/Berlin",
    domain=DomainJoin("corp.example.com", "svc-join", Secret("JoinSecret"), "OU=Workstations,DC=corp,DC=example,DC=com"),
    interfaces=(
        Interface("52:54:00:12:34:56", dhcp=False, addresses=("192.168.10.50/24",), gateway="192.168.10.1",
                  dns=("192.168.10.2",)),
        Interface("52:54:00:ab:cd:ef"),  # DHCP: nothing to say about it
    ),
)
SETUP = ["pnputil.exe /add-driver C:\\Drivers\\*.inf /subdirs /install"]
LOGON = ["cmd /c del /q C:\\Windows\\Panther\\unattend.xml"]

# The research notes' minimal unattend.xml, reshaped only where this writer is stricter: WSIM's
# alphabetical order (ProductKey before RegisteredOrganization) and OOBE/TimeZone in oobeSystem.
GOLDEN = """<?xml version="1.0" encoding="utf-8"?>
<unattend xmlns="urn:schemas-microsoft-com:unattend" xmlns:wcm="http://schemas.microsoft.com/WMIConfig/2002/State">
  <settings pass="specialize">
    <component name="Microsoft-Windows-Shell-Setup" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
      <ComputerName>WS-0042</ComputerName>
      <ProductKey>XXXXX-XXXXX-XXXXX-XXXXX-XXXXX</ProductKey>
      <RegisteredOrganization>Example Corp</RegisteredOrganization>
      <RegisteredOwner>IT</RegisteredOwner>
      <TimeZone>W. Europe Standard Time</TimeZone>
    </component>
    <component name="Microsoft-Windows-UnattendedJoin" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
      <Identification>
        <Credentials>
          <Domain>corp.example.com</Domain>
          <Password>JoinSecret</Password>
          <Username>svc-join</Username>
        </Credentials>
        <JoinDomain>corp.example.com</JoinDomain>
        <MachineObjectOU>OU=Workstations,DC=corp,DC=example,DC=com</MachineObjectOU>
      </Identification>
    </component>
    <component name="Microsoft-Windows-TCPIP" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
      <Interfaces>
        <Interface wcm:action="add">
          <Ipv4Settings>
            <DhcpEnabled>false</DhcpEnabled>
          </Ipv4Settings>
          <Identifier>52-54-00-12-34-56</Identifier>
          <UnicastIpAddresses>
            <IpAddress wcm:action="add" wcm:keyValue="1">192.168.10.50/24</IpAddress>
          </UnicastIpAddresses>
          <Routes>
            <Route wcm:action="add">
              <Identifier>1</Identifier>
              <Metric>10</Metric>
              <NextHopAddress>192.168.10.1</NextHopAddress>
              <Prefix>0.0.0.0/0</Prefix>
            </Route>
          </Routes>
        </Interface>
      </Interfaces>
    </component>
    <component name="Microsoft-Windows-DNS-Client" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
      <Interfaces>
        <Interface wcm:action="add">
          <Identifier>52-54-00-12-34-56</Identifier>
          <DNSServerSearchOrder>
            <IpAddress wcm:action="add" wcm:keyValue="1">192.168.10.2</IpAddress>
          </DNSServerSearchOrder>
        </Interface>
      </Interfaces>
    </component>
    <component name="Microsoft-Windows-Deployment" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
      <RunSynchronous>
        <RunSynchronousCommand wcm:action="add">
          <Order>1</Order>
          <Path>pnputil.exe /add-driver C:\\Drivers\\*.inf /subdirs /install</Path>
        </RunSynchronousCommand>
      </RunSynchronous>
    </component>
  </settings>
  <settings pass="oobeSystem">
    <component name="Microsoft-Windows-Shell-Setup" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
      <FirstLogonCommands>
        <SynchronousCommand wcm:action="add">
          <CommandLine>cmd /c del /q C:\\Windows\\Panther\\unattend.xml</CommandLine>
          <Order>1</Order>
        </SynchronousCommand>
      </FirstLogonCommands>
      <OOBE>
        <HideEULAPage>true</HideEULAPage>
        <HideLocalAccountScreen>true</HideLocalAccountScreen>
        <HideOEMRegistrationScreen>true</HideOEMRegistrationScreen>
        <HideOnlineAccountScreens>true</HideOnlineAccountScreens>
        <HideWirelessSetupInOOBE>true</HideWirelessSetupInOOBE>
        <ProtectYourPC>3</ProtectYourPC>
      </OOBE>
      <TimeZone>W. Europe Standard Time</TimeZone>
      <UserAccounts>
        <AdministratorPassword>
          <Value>UABAAHMAcwB3ADAAcgBkACEAQQBkAG0AaQBuAGkAcwB0AHIAYQB0AG8AcgBQAGEAcwBzAHcAbwByAGQA</Value>
          <PlainText>false</PlainText>
        </AdministratorPassword>
      </UserAccounts>
    </component>
  </settings>
</unattend>
"""


def parse(state: MachineState, arch: str = "amd64", **kwargs) -> ET.Element:
    return ET.fromstring(unattend_xml(state, arch, **kwargs))


def components(root: ET.Element) -> dict[str, list[str]]:
    return {s.get("pass"): [c.get("name") for c in s.findall(f"{NS}component")] for s in root.findall(f"{NS}settings")}


def component(root: ET.Element, pass_: str, name: str) -> ET.Element:
    found = root.find(f"{NS}settings[@pass='{pass_}']/{NS}component[@name='{name}']")
    assert found is not None, (pass_, name)
    return found


def tags(element: ET.Element) -> list[str]:
    return [child.tag.removeprefix(NS) for child in element]


def test_rich_state_golden_document():
    assert unattend_xml(RICH, "amd64", setup_commands=SETUP, logon_commands=LOGON).decode() == GOLDEN


def test_well_formed_utf8_with_both_namespaces():
    data = unattend_xml(RICH, "amd64", setup_commands=SETUP)
    assert data.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n')
    root = ET.fromstring(data)
    assert root.tag == f"{NS}unattend"
    interface = root.find(f".//{NS}component[@name='Microsoft-Windows-TCPIP']/{NS}Interfaces/{NS}Interface")
    assert interface.attrib == {f"{WCM}action": "add"}
    address = interface.find(f"{NS}UnicastIpAddresses/{NS}IpAddress")
    assert address.attrib == {f"{WCM}action": "add", f"{WCM}keyValue": "1"}


def test_components_sit_in_their_passes_in_order():
    assert components(parse(RICH, setup_commands=SETUP, logon_commands=LOGON)) == {
        "specialize": ["Microsoft-Windows-Shell-Setup", "Microsoft-Windows-UnattendedJoin", "Microsoft-Windows-TCPIP",
                       "Microsoft-Windows-DNS-Client", "Microsoft-Windows-Deployment"],
        "oobeSystem": ["Microsoft-Windows-Shell-Setup"],
    }


def test_child_order_of_every_component():
    root = parse(RICH, setup_commands=SETUP, logon_commands=LOGON)
    shell = component(root, "specialize", "Microsoft-Windows-Shell-Setup")
    assert tags(shell) == ["ComputerName", "ProductKey", "RegisteredOrganization", "RegisteredOwner", "TimeZone"]
    identification = component(root, "specialize", "Microsoft-Windows-UnattendedJoin").find(f"{NS}Identification")
    assert tags(identification) == ["Credentials", "JoinDomain", "MachineObjectOU"]
    assert tags(identification.find(f"{NS}Credentials")) == ["Domain", "Password", "Username"]
    route = component(root, "specialize", "Microsoft-Windows-TCPIP").find(f".//{NS}Route")
    assert tags(route) == ["Identifier", "Metric", "NextHopAddress", "Prefix"]
    dns = component(root, "specialize", "Microsoft-Windows-DNS-Client").find(f".//{NS}Interface")
    assert tags(dns) == ["Identifier", "DNSServerSearchOrder"]
    oobe = component(root, "oobeSystem", "Microsoft-Windows-Shell-Setup")
    assert tags(oobe) == ["FirstLogonCommands", "OOBE", "TimeZone", "UserAccounts"]
    assert tags(oobe.find(f"{NS}UserAccounts/{NS}AdministratorPassword")) == ["Value", "PlainText"]


def test_ipv6_interface_child_order_and_routes():
    state = MachineState(interfaces=(Interface(
        "52:54:00:12:34:56", dhcp=False, addresses=("192.168.10.50/24", "2001:db8::5/64"), gateway="192.168.10.1",
        gateway6="2001:db8::1", dns=("2001:db8::53", "192.168.10.2"), search=("corp.example.com", "example.com")),))
    root = parse(state)
    interface = component(root, "specialize", "Microsoft-Windows-TCPIP").find(f".//{NS}Interface")
    assert tags(interface) == ["Ipv4Settings", "Ipv6Settings", "Identifier", "UnicastIpAddresses", "Routes"]
    assert interface.findtext(f"{NS}Ipv6Settings/{NS}DhcpEnabled") == "false"
    addresses = interface.findall(f"{NS}UnicastIpAddresses/{NS}IpAddress")
    assert [(a.get(f"{WCM}keyValue"), a.text) for a in addresses] == [("1", "192.168.10.50/24"), ("2", "2001:db8::5/64")]
    routes = [(r.findtext(f"{NS}Identifier"), r.findtext(f"{NS}NextHopAddress"), r.findtext(f"{NS}Prefix"))
              for r in interface.findall(f"{NS}Routes/{NS}Route")]
    assert routes == [("1", "192.168.10.1", "0.0.0.0/0"), ("2", "2001:db8::1", "::/0")]
    dns = component(root, "specialize", "Microsoft-Windows-DNS-Client")
    assert tags(dns) == ["DNSSuffixSearchOrder", "Interfaces"]
    assert [(d.get(f"{WCM}keyValue"), d.text) for d in dns.find(f"{NS}DNSSuffixSearchOrder")] == [
        ("1", "corp.example.com"), ("2", "example.com")]
    dns_interface = dns.find(f"{NS}Interfaces/{NS}Interface")
    assert tags(dns_interface) == ["Identifier", "DNSDomain", "DNSServerSearchOrder"]
    assert dns_interface.findtext(f"{NS}DNSDomain") == "corp.example.com"
    assert [s.text for s in dns_interface.findall(f"{NS}DNSServerSearchOrder/{NS}IpAddress")] == [
        "2001:db8::53", "192.168.10.2"]


def test_static_ipv6_beside_dhcpv4_leaves_ipv4_alone():
    state = MachineState(interfaces=(Interface("52:54:00:12:34:56", addresses=("2001:db8::5/64",)),))
    interface = component(parse(state), "specialize", "Microsoft-Windows-TCPIP").find(f".//{NS}Interface")
    assert tags(interface) == ["Ipv6Settings", "Identifier", "UnicastIpAddresses"]


def test_one_search_domain_is_only_the_connection_suffix():
    state = MachineState(interfaces=(Interface("52:54:00:12:34:56", dhcp=False, addresses=("10.0.0.5/8",),
                                               search=("corp.example.com",)),))
    dns = component(parse(state), "specialize", "Microsoft-Windows-DNS-Client")
    assert tags(dns) == ["Interfaces"]
    assert tags(dns.find(f".//{NS}Interface")) == ["Identifier", "DNSDomain"]


def test_empty_state_writes_only_the_oobe_page_switches():
    root = parse(MachineState())
    assert components(root) == {"oobeSystem": ["Microsoft-Windows-Shell-Setup"]}
    oobe = component(root, "oobeSystem", "Microsoft-Windows-Shell-Setup")
    assert tags(oobe) == ["OOBE"]
    # No administrator password: the page that sets one must stay.
    assert "HideLocalAccountScreen" not in tags(oobe.find(f"{NS}OOBE"))
    assert list(parse(MachineState(), oobe={})) == []


def test_dhcp_interfaces_are_skipped():
    state = MachineState(interfaces=(Interface("52:54:00:12:34:56", dns=("10.0.0.53",), search=("example.com",)),))
    assert components(parse(state)) == {"oobeSystem": ["Microsoft-Windows-Shell-Setup"]}


def test_static_interface_without_mac_is_refused():
    state = MachineState(interfaces=(Interface(None, dhcp=False, addresses=("10.0.0.5/8",), name="Ethernet"),))
    with pytest.raises(ValueError, match="interface Ethernet: expected a MAC address"):
        unattend_xml(state, "amd64")


def test_malformed_address_is_refused():
    state = MachineState(interfaces=(Interface("52:54:00:12:34:56", addresses=("10.0.0.300/8",)),))
    with pytest.raises(ValueError, match="interface 52-54-00-12-34-56: expected an address like"):
        unattend_xml(state, "amd64")


def test_workgroup_instead_of_domain():
    root = parse(MachineState(workgroup="LAB"))
    identification = component(root, "specialize", "Microsoft-Windows-UnattendedJoin").find(f"{NS}Identification")
    assert tags(identification) == ["JoinWorkgroup"] and identification.findtext(f"{NS}JoinWorkgroup") == "LAB"
    both = parse(MachineState(domain=DomainJoin("corp.example.com"), workgroup="LAB"))
    identification = component(both, "specialize", "Microsoft-Windows-UnattendedJoin").find(f"{NS}Identification")
    assert tags(identification) == ["JoinDomain"]


@pytest.mark.parametrize("username", ["svc-join@corp.example.com", "CORP\\svc-join"])
def test_username_with_its_domain_needs_no_credentials_domain(username):
    root = parse(MachineState(domain=DomainJoin("corp.example.com", username, Secret("s"))))
    credentials = component(root, "specialize", "Microsoft-Windows-UnattendedJoin").find(f".//{NS}Credentials")
    assert tags(credentials) == ["Password", "Username"] and credentials.findtext(f"{NS}Username") == username


def test_architecture_is_written_on_every_component_and_checked():
    root = parse(RICH, "arm64", logon_commands=LOGON)
    assert {c.get("processorArchitecture") for c in root.iter(f"{NS}component")} == {"arm64"}
    with pytest.raises(ValueError, match="expected one of amd64, x86, arm64, found 'ia64'"):
        unattend_xml(RICH, "ia64")


@pytest.mark.parametrize(("given", "written"), [("Europe/Berlin", "W. Europe Standard Time"),
                                                 ("w. europe standard time", "W. Europe Standard Time"),
                                                 ("America/New_York", "Eastern Standard Time")])
def test_timezone_is_converted_to_windows(given, written):
    root = parse(MachineState(timezone=given))
    assert component(root, "specialize", "Microsoft-Windows-Shell-Setup").findtext(f"{NS}TimeZone") == written
    assert component(root, "oobeSystem", "Microsoft-Windows-Shell-Setup").findtext(f"{NS}TimeZone") == written


def test_unknown_timezone_is_refused():
    with pytest.raises(ValueError, match="found 'Mars/Olympus_Mons'"):
        unattend_xml(MachineState(timezone="Mars/Olympus_Mons"), "amd64")


def test_secrets_only_in_the_bytes_and_only_hidden_where_possible():
    data = unattend_xml(RICH, "amd64")
    assert b"P@ssw0rd!" not in data  # hidden, not in the clear
    value = ET.fromstring(data).findtext(f".//{NS}AdministratorPassword/{NS}Value")
    assert decode_password(value, "AdministratorPassword") == "P@ssw0rd!"
    assert b"<Password>JoinSecret</Password>" in data and b"XXXXX-XXXXX-XXXXX-XXXXX-XXXXX" in data


def test_summary_describes_without_secrets():
    lines = unattend_summary(RICH)
    assert lines == [
        "ComputerName WS-0042", "RegisteredOrganization Example Corp", "RegisteredOwner IT", "ProductKey <secret>",
        "TimeZone W. Europe Standard Time",
        "JoinDomain corp.example.com as svc-join (password <secret>) in OU=Workstations,DC=corp,DC=example,DC=com",
        "Interface 52-54-00-12-34-56 192.168.10.50/24 via 192.168.10.1 dns 192.168.10.2",
        "AdministratorPassword <secret>",
    ]
    text = "\n".join(lines) + repr(RICH) + str(RICH)
    for secret in ("P@ssw0rd!", "JoinSecret", "XXXXX-XXXXX-XXXXX-XXXXX-XXXXX"):
        assert secret not in text


def test_summary_of_workgroup_and_unknown_zone_does_not_raise():
    assert unattend_summary(MachineState(workgroup="LAB", timezone="Mars/Olympus_Mons")) == [
        "TimeZone Mars/Olympus_Mons (unknown to Windows)", "JoinWorkgroup LAB"]


def test_commands_are_ordered_escaped_and_limited():
    commands = ['cmd /c echo a & echo b > "%TEMP%\\x.txt"', "powershell -c 1<2"]
    root = parse(MachineState(), setup_commands=commands, logon_commands=commands)
    run = component(root, "specialize", "Microsoft-Windows-Deployment").findall(f".//{NS}RunSynchronousCommand")
    assert [(c.findtext(f"{NS}Order"), c.findtext(f"{NS}Path")) for c in run] == [("1", commands[0]), ("2", commands[1])]
    logon = component(root, "oobeSystem", "Microsoft-Windows-Shell-Setup").findall(f".//{NS}SynchronousCommand")
    assert [tags(c) for c in logon] == [["CommandLine", "Order"]] * 2
    assert [c.findtext(f"{NS}CommandLine") for c in logon] == commands
    with pytest.raises(ValueError, match="setup command 1: expected 1 to 259 characters"):
        unattend_xml(MachineState(), "amd64", setup_commands=["x" * 260])
    with pytest.raises(ValueError, match="logon command 2: expected 1 to 1024 characters"):
        unattend_xml(MachineState(), "amd64", logon_commands=["ok", " "])


def test_control_characters_are_refused_without_showing_the_value():
    with pytest.raises(ValueError, match="Password: expected text without control characters") as caught:
        unattend_xml(MachineState(domain=DomainJoin("corp.example.com", "u", Secret("se\x01cret"))), "amd64")
    assert "se\x01cret" not in str(caught.value)


def test_windows_7_page_switches():
    oobe = component(parse(RICH, oobe=OOBE_WINDOWS_7), "oobeSystem", "Microsoft-Windows-Shell-Setup").find(f"{NS}OOBE")
    assert [(tag, oobe.findtext(f"{NS}{tag}")) for tag in tags(oobe)] == [
        ("HideEULAPage", "true"), ("HideWirelessSetupInOOBE", "true"), ("NetworkLocation", "Work"),
        ("ProtectYourPC", "3")]
